//! Attention-pooled group influence (DESIGN section 1) as a streaming, mergeable state.
//!
//! With member scores s_i, attention pooling is Σ softmax(|s|)_i · s_i. Kept as a running
//! log-sum-exp — m = max|s|, z = Σ exp(|s_i| - m), n = Σ exp(|s_i| - m) · s_i — the result
//! n / z never overflows, and two states merge by rescaling to the larger m, so partial
//! states from parallel workers combine exactly like one serial pass.
//!
//! Precision: each member's score is its dot product with the target in f32 lanes
//! ([`crate::vector::dot_f32`], as pgvector computes `<#>`), within
//! `ε_i = (d/16 + 8) · 2⁻²⁴ · Σ_j |t_j·m_ij|` of the exact value on every SIMD tier, and
//! the running sums are f64. So `pooling = 'sum'` is within `Σ_i ε_i` (plus f64 rounding,
//! `count · 2⁻⁵³ · Σ|s_i|`) of the exact sum: a group whose scores nearly cancel stays
//! accurate to its members' own rounding (a member and its negation cancel exactly), where
//! an f32 running sum would lose it all. Attention pooling is a weighted mean of the scores
//! with weights from `|s_i|`, so it moves by at most about `max_i ε_i · (1 + 2·max|s|)`.

use std::fmt;
use std::str::FromStr;

use crate::state::{Reader, StateError};
use crate::vector::dot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Pooling {
    /// Σ softmax(|s|)_i · s_i, the AirRep group score.
    Attention = 0,
    /// Σ s_i, the linear baseline of gradient methods.
    Sum = 1,
}

impl Pooling {
    /// The pooling whose discriminant is `code` (how a serialised SQL state records it).
    pub fn from_code(code: u8) -> Option<Pooling> {
        match code {
            0 => Some(Pooling::Attention),
            1 => Some(Pooling::Sum),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPooling(pub String);

impl fmt::Display for UnknownPooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown pooling \"{}\": expected 'attention' or 'sum'",
            self.0
        )
    }
}

impl std::error::Error for UnknownPooling {}

impl fmt::Display for Pooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pooling::Attention => "attention",
            Pooling::Sum => "sum",
        })
    }
}

impl FromStr for Pooling {
    type Err = UnknownPooling;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "attention" => Ok(Pooling::Attention),
            "sum" => Ok(Pooling::Sum),
            other => Err(UnknownPooling(other.to_string())),
        }
    }
}

/// The running state of one group: the streaming log-sum-exp of the attention weights, and
/// the plain sum for `pooling = 'sum'`. `Default` is the empty group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupState {
    count: u64,
    /// max |s| so far
    m: f64,
    /// Σ exp(|s_i| - m)
    z: f64,
    /// Σ exp(|s_i| - m) · s_i
    n: f64,
    /// Σ s_i
    sum: f64,
}

impl GroupState {
    /// Add one member's score. Scores are finite (dots of finite vectors); a NaN makes the
    /// result NaN.
    pub fn push(&mut self, score: f64) {
        let magnitude = score.abs();
        if self.count == 0 {
            *self = GroupState {
                count: 1,
                m: magnitude,
                z: 1.0,
                n: score,
                sum: score,
            };
            return;
        }
        if magnitude > self.m {
            // The new member dominates: rescale what we have to its exponent, so exp never
            // sees a positive argument and cannot overflow.
            let scale = (self.m - magnitude).exp();
            self.z = self.z * scale + 1.0;
            self.n = self.n * scale + score;
            self.m = magnitude;
        } else {
            let weight = (magnitude - self.m).exp();
            self.z += weight;
            self.n += weight * score;
        }
        self.sum += score;
        self.count += 1;
    }

    /// Combine with another group's partial state, as if its scores had been pushed here.
    pub fn merge(&mut self, other: &GroupState) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other.clone();
            return;
        }
        let m = self.m.max(other.m);
        let (mine, theirs) = ((self.m - m).exp(), (other.m - m).exp());
        self.z = self.z * mine + other.z * theirs;
        self.n = self.n * mine + other.n * theirs;
        self.m = m;
        self.sum += other.sum;
        self.count += other.count;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The pooled score, or None for an empty group.
    pub fn result(&self, pooling: Pooling) -> Option<f64> {
        (self.count > 0).then(|| match pooling {
            Pooling::Attention => self.n / self.z,
            Pooling::Sum => self.sum,
        })
    }

    /// Little-endian: count, m, z, n, sum.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = [0; GROUP_STATE_BYTES];
        self.write_array(&mut out);
        out.to_vec()
    }

    fn write_array(&self, out: &mut [u8; GROUP_STATE_BYTES]) {
        out[..8].copy_from_slice(&self.count.to_le_bytes());
        for (field, x) in out[8..]
            .chunks_exact_mut(8)
            .zip([self.m, self.z, self.n, self.sum])
        {
            field.copy_from_slice(&x.to_le_bytes());
        }
    }

    /// The inverse of [`Self::write_array`]: every 40 bytes are some state.
    fn from_array(bytes: &[u8; GROUP_STATE_BYTES]) -> Self {
        let word =
            |i: usize| <[u8; 8]>::try_from(&bytes[8 * i..8 * i + 8]).expect("5 words of 8 bytes");
        GroupState {
            count: u64::from_le_bytes(word(0)),
            m: f64::from_le_bytes(word(1)),
            z: f64::from_le_bytes(word(2)),
            n: f64::from_le_bytes(word(3)),
            sum: f64::from_le_bytes(word(4)),
        }
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StateError> {
        let array = bytes.try_into().map_err(|_| {
            StateError(if bytes.len() < GROUP_STATE_BYTES {
                "truncated state"
            } else {
                "trailing bytes in state"
            })
        })?;
        Ok(Self::from_array(array))
    }
}

impl Extend<f64> for GroupState {
    fn extend<I: IntoIterator<Item = f64>>(&mut self, scores: I) {
        scores.into_iter().for_each(|s| self.push(s));
    }
}

impl FromIterator<f64> for GroupState {
    fn from_iter<I: IntoIterator<Item = f64>>(scores: I) -> Self {
        let mut state = GroupState::default();
        state.extend(scores);
        state
    }
}

/// The state of one `group_influence` group: the target its members are scored against
/// (kept so that a target changing within a group is caught, not silently mixed), the
/// pooling, and the streaming scores.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetGroup {
    pub target: Vec<f32>,
    pub pooling: Pooling,
    pub scores: GroupState,
}

impl TargetGroup {
    pub fn new(target: &[f32], pooling: Pooling) -> Self {
        TargetGroup {
            target: target.to_vec(),
            pooling,
            scores: GroupState::default(),
        }
    }

    /// Little-endian: pooling code (u8), dimensions (u32), the target's f32s, then the
    /// scores' [`GroupState::to_bytes`].
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + 4 * self.target.len() + 40);
        out.push(self.pooling as u8);
        out.extend_from_slice(&(self.target.len() as u32).to_le_bytes());
        for x in &self.target {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.extend_from_slice(&self.scores.to_bytes());
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StateError> {
        let mut reader = Reader::new(bytes);
        let pooling = Pooling::from_code(reader.u8()?).ok_or(StateError("unknown pooling code"))?;
        let dims = reader.u32()?;
        let target = reader.f32s(dims as u64)?;
        let scores = GroupState::from_bytes(reader.rest())?;
        Ok(TargetGroup {
            target,
            pooling,
            scores,
        })
    }
}

/// A [`TargetGroup`] in its byte form, updated where it lies: an aggregate's transition
/// value gains one member per row without being decoded and encoded again. Only the 40
/// bytes of the running scores change; the target is compared, never copied.
pub struct EncodedGroup<'a> {
    pooling: Pooling,
    target: &'a [u8],
    scores: &'a mut [u8],
}

impl<'a> EncodedGroup<'a> {
    /// Checks that `bytes` has the layout of [`TargetGroup::to_bytes`] (pooling code,
    /// dimensions, that many f32s, the scores), in time that does not grow with them.
    pub fn new(bytes: &'a mut [u8]) -> Result<Self, StateError> {
        let (header, rest) = bytes
            .split_first_chunk_mut::<5>()
            .ok_or(StateError("truncated state"))?;
        let pooling = Pooling::from_code(header[0]).ok_or(StateError("unknown pooling code"))?;
        let dims = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if rest.len() != 4 * dims + GROUP_STATE_BYTES {
            return Err(StateError("state length does not match its dimensions"));
        }
        let (target, scores) = rest.split_at_mut(4 * dims);
        Ok(EncodedGroup {
            pooling,
            target,
            scores,
        })
    }

    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Whether `target` is the group's target, compared as values (as `==` on slices).
    /// Runs once per row: equal bytes (one `memcmp`, on a little-endian machine) settle
    /// it; only bytes that differ are compared as values, where 0.0 equals -0.0.
    pub fn has_target(&self, target: &[f32]) -> bool {
        if self.target.len() != 4 * target.len() {
            return false;
        }
        self.target == native_bytes(target)
            || self
                .target
                .chunks_exact(4)
                .zip(target)
                .all(|(b, &x)| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) == x)
    }

    pub fn push(&mut self, score: f64) {
        let bytes: &mut [u8; GROUP_STATE_BYTES] =
            self.scores.try_into().expect("length checked in new");
        let mut scores = GroupState::from_array(bytes);
        scores.push(score);
        scores.write_array(bytes);
    }
}

/// The bytes of `v` in memory: its little-endian encoding on a little-endian machine.
fn native_bytes(v: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and every byte is a valid u8; the length is the slice's.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

/// The length of [`GroupState::to_bytes`].
const GROUP_STATE_BYTES: usize = 40;

/// The pooled score of `scores` in one pass (handy for training and evaluation).
pub fn pool(scores: impl IntoIterator<Item = f64>, pooling: Pooling) -> Option<f64> {
    scores.into_iter().collect::<GroupState>().result(pooling)
}

/// Group scores `[target][subset]` from member scores `[target][union]`: `subsets[k]` lists
/// subset k's members as positions in the union (one score column per distinct example,
/// so an example shared by subsets, or repeated in one, is scored once and counted every
/// time it is listed). Members are pooled in the order listed.
///
/// # Panics
/// If a subset is empty (it has no group score) or a position is outside a score row.
pub fn pool_subsets(
    scores: &[impl AsRef<[f64]>],
    subsets: &[Vec<usize>],
    pooling: Pooling,
) -> Vec<Vec<f64>> {
    scores
        .iter()
        .map(|row| {
            let row = row.as_ref();
            subsets
                .iter()
                .map(|members| {
                    pool(members.iter().map(|&p| row[p]), pooling).expect("subsets are not empty")
                })
                .collect()
        })
        .collect()
}

/// Group scores `[target][subset]` from embeddings: each target's dot product with every
/// example of the union (`union`, each distinct member once), pooled per subset as in
/// [`pool_subsets`]. The scores an evaluation or a training step ranks subsets by.
pub fn group_scores(
    targets: &[impl AsRef<[f32]>],
    union: &[impl AsRef<[f32]>],
    subsets: &[Vec<usize>],
    pooling: Pooling,
) -> Vec<Vec<f64>> {
    let scores: Vec<Vec<f64>> = targets
        .iter()
        .map(|t| union.iter().map(|u| dot(t.as_ref(), u.as_ref())).collect())
        .collect();
    pool_subsets(&scores, subsets, pooling)
}

/// `d score / d s_i` for one group whose pooled score is `score` (from [`pool`]).
///
/// Attention: with `a = softmax(|s|)` and `score = Σ a_i s_i`,
/// `d score / d s_i = a_i · (1 + sign(s_i) · (s_i − score))`, where `sign(0) = 0` as in
/// torch (the subgradient of `|s|` at 0). The weights are computed relative to `max |s|`,
/// so they are exact for scores of any magnitude. Sum: every slope is 1.
pub fn pool_slopes(scores: &[f64], score: f64, pooling: Pooling) -> Vec<f64> {
    match pooling {
        Pooling::Sum => vec![1.0; scores.len()],
        Pooling::Attention => {
            let max = scores.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            let weights: Vec<f64> = scores.iter().map(|x| (x.abs() - max).exp()).collect();
            let z: f64 = weights.iter().sum();
            scores
                .iter()
                .zip(&weights)
                .map(|(&x, &w)| {
                    let sign = if x == 0.0 { 0.0 } else { x.signum() };
                    w / z * (1.0 + sign * (x - score))
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::{with_tier, Tier};
    use crate::vector::dot_f32;

    /// Sum pooling of f32-lane scores against the f64 reference, on every SIMD tier: within
    /// the module's bound, and exactly zero for members that cancel.
    #[test]
    fn sum_pooling_of_f32_lane_scores_meets_the_bound_on_every_tier() {
        let d = 384;
        let value = |i: usize, j: usize| ((i * 7919 + j * 104_729) % 2001) as f32 / 1000.0 - 1.0;
        let target: Vec<f32> = (0..d).map(|j| value(999, j) * 3.0).collect();
        let members: Vec<Vec<f32>> = (0..200)
            .map(|i| (0..d).map(|j| value(i, j)).collect())
            .collect();
        let exact: f64 = members
            .iter()
            .map(|m| {
                m.iter()
                    .zip(&target)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum::<f64>()
            })
            .sum();
        let bound: f64 = members
            .iter()
            .map(|m| {
                let magnitude: f64 = m
                    .iter()
                    .zip(&target)
                    .map(|(&a, &b)| (a as f64 * b as f64).abs())
                    .sum();
                (d as f64 / 16.0 + 8.0) * 2f64.powi(-24) * magnitude
            })
            .sum();
        for tier in Tier::available() {
            let (got, cancelled) = with_tier(tier, || {
                let group: GroupState = members.iter().map(|m| dot_f32(&target, m)).collect();
                let negated: GroupState = members
                    .iter()
                    .flat_map(|m| {
                        let minus: Vec<f32> = m.iter().map(|x| -x).collect();
                        [dot_f32(&target, m), dot_f32(&target, &minus)]
                    })
                    .collect();
                (
                    group.result(Pooling::Sum).unwrap(),
                    negated.result(Pooling::Sum).unwrap(),
                )
            })
            .unwrap();
            assert!(
                (got - exact).abs() <= bound,
                "{tier}: {got} vs {exact} (bound {bound:e})"
            );
            assert_eq!(cancelled, 0.0, "{tier}");
        }
    }

    #[test]
    fn an_encoded_group_grows_as_the_decoded_one() {
        let target = [0.5f32, -2.0, 0.0];
        let scores = [0.7, -1.3, 2.2, 0.05];
        for pooling in [Pooling::Attention, Pooling::Sum] {
            let mut decoded = TargetGroup::new(&target, pooling);
            let mut bytes = decoded.to_bytes();
            for &s in &scores {
                decoded.scores.push(s);
                let mut group = EncodedGroup::new(&mut bytes).unwrap();
                assert!(group.has_target(&target));
                assert!(group.has_target(&[0.5, -2.0, -0.0]), "compared as values");
                assert!(!group.has_target(&[0.5, -2.0, 1.0]));
                assert!(!group.has_target(&[0.5, -2.0]));
                assert_eq!(group.pooling(), pooling);
                group.push(s);
            }
            assert_eq!(TargetGroup::from_bytes(&bytes).unwrap(), decoded);
        }
    }

    #[test]
    fn an_encoded_group_rejects_bytes_of_another_layout() {
        let mut bytes = TargetGroup::new(&[1.0, 2.0], Pooling::Sum).to_bytes();
        for cut in [0, 4, bytes.len() - 1] {
            assert!(
                EncodedGroup::new(&mut bytes.clone()[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        bytes.push(0);
        assert!(EncodedGroup::new(&mut bytes).is_err());
        let mut bad_code = TargetGroup::new(&[1.0], Pooling::Sum).to_bytes();
        bad_code[0] = 9;
        assert_eq!(
            EncodedGroup::new(&mut bad_code).err(),
            Some(StateError("unknown pooling code"))
        );
    }

    #[test]
    fn slopes_match_central_differences() {
        let scores = [0.7, -1.3, 2.2, 0.05, -0.4];
        for pooling in [Pooling::Attention, Pooling::Sum] {
            let score = pool(scores, pooling).unwrap();
            let slopes = pool_slopes(&scores, score, pooling);
            for i in 0..scores.len() {
                let h = 1e-6;
                let mut up = scores;
                let mut down = scores;
                up[i] += h;
                down[i] -= h;
                let numeric =
                    (pool(up, pooling).unwrap() - pool(down, pooling).unwrap()) / (2.0 * h);
                assert!(
                    (slopes[i] - numeric).abs() < 1e-8,
                    "{pooling:?} slope {i}: {} vs {numeric}",
                    slopes[i]
                );
            }
        }
        // a softmax of huge scores stays finite and puts all the weight on the largest |s|
        let slopes = pool_slopes(&[1e4, -3e4], -3e4, Pooling::Attention);
        assert_eq!(slopes, vec![0.0, 1.0]);
    }

    #[test]
    fn attention_matches_hand_computed_softmax() {
        // s = [1, 2]: a = [1, e] / (1 + e)
        let e = std::f64::consts::E;
        let expected = (1.0 + 2.0 * e) / (1.0 + e);
        assert!((pool([1.0, 2.0], Pooling::Attention).unwrap() - expected).abs() < 1e-15);
        // |s| drives the weights: s = [-3, 1] weighs -3 by e^3
        let expected = (-3.0 * e.powi(3) + e) / (e.powi(3) + e);
        assert!((pool([-3.0, 1.0], Pooling::Attention).unwrap() - expected).abs() < 1e-14);
        assert_eq!(pool([-3.0, 1.0], Pooling::Sum), Some(-2.0));
        assert_eq!(pool([], Pooling::Attention), None);
    }

    #[test]
    fn group_scores_match_a_direct_loop() {
        // Three distinct examples; subset 1 repeats one, subsets 0 and 2 share one.
        let union = [
            vec![0.5f32, -1.0, 2.0],
            vec![1.5, 0.25, -0.75],
            vec![-2.0, 0.5, 1.0],
        ];
        let targets = [vec![1.0f32, 2.0, -0.5], vec![-0.3, 0.8, 1.7]];
        let subsets = vec![vec![0, 2], vec![1, 1, 0], vec![2], vec![2, 0, 2, 1]];
        for pooling in [Pooling::Attention, Pooling::Sum] {
            let got = group_scores(&targets, &union, &subsets, pooling);
            assert_eq!(got.len(), targets.len());
            for (t, row) in targets.iter().zip(&got) {
                assert_eq!(row.len(), subsets.len());
                for (members, &score) in subsets.iter().zip(row) {
                    let direct = members.iter().map(|&p| {
                        t.iter()
                            .zip(&union[p])
                            .map(|(&a, &b)| f64::from(a) * f64::from(b))
                            .sum::<f64>()
                    });
                    let want = pool(direct, pooling).unwrap();
                    assert!(
                        (score - want).abs() <= 1e-12 * want.abs().max(1.0),
                        "{pooling:?}: {score} vs {want}"
                    );
                }
            }
        }
        // The repeat counts twice: the sum of subset 1 is 2 s(1) + s(0).
        let s = |p: usize| dot(&targets[0], &union[p]);
        let sums = group_scores(&targets, &union, &subsets, Pooling::Sum);
        assert!((sums[0][1] - (2.0 * s(1) + s(0))).abs() < 1e-12);
        assert!(group_scores(&[] as &[Vec<f32>], &union, &subsets, Pooling::Sum).is_empty());
    }

    #[test]
    fn huge_scores_do_not_overflow() {
        let score = pool([1e4, 2e4, -1e5], Pooling::Attention).unwrap();
        assert_eq!(score, -1e5);
        assert!(pool([1e300, 1e300], Pooling::Attention)
            .unwrap()
            .is_finite());
    }

    #[test]
    fn pooling_names() {
        for pooling in [Pooling::Attention, Pooling::Sum] {
            assert_eq!(pooling.to_string().parse::<Pooling>(), Ok(pooling));
            assert_eq!(Pooling::from_code(pooling as u8), Some(pooling));
        }
        assert_eq!(Pooling::from_code(2), None);
        assert_eq!(
            "max".parse::<Pooling>().unwrap_err().to_string(),
            "unknown pooling \"max\": expected 'attention' or 'sum'"
        );
    }
}
