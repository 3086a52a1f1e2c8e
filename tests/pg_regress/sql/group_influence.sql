-- group_influence: attention pooling of DESIGN section 1, by hand.
-- target [1,0]; members [1,0] and [2,0] give scores s = 1 and 2;
-- a = softmax(|s|) = [1/(1+e), e/(1+e)], score = (1 + 2e)/(1 + e) = 1.7310585786300049
CREATE TABLE members (grp int, target airrep_vector, member airrep_vector);
INSERT INTO members VALUES
    (1, '[1,0]', '[1,0]'), (1, '[1,0]', '[2,0]'),
    (2, '[0,1]', '[0,-3]'), (2, '[0,1]', '[5,1]'), (2, '[0,1]', NULL),
    (3, '[1,1]', NULL);
SELECT grp, round(group_influence(target, member)::numeric, 12) AS attention,
       group_influence(target, member, 'sum') AS sum,
       sum(influence(target, member)) AS sum_of_influence
FROM members GROUP BY grp ORDER BY grp;
-- group 2: s = -3 and 1; a = softmax([3, 1]); score = (-3e^3 + e)/(e^3 + e) = -2.5231883119115293
-- the explicit default pooling equals the two-argument form
SELECT group_influence(target, member, 'attention') = group_influence(target, member)
FROM members WHERE grp = 2;
-- an empty group is NULL
SELECT group_influence(target, member) FROM members WHERE false;
-- huge scores do not overflow: s = 1e4 and 2e4 give essentially 2e4
SELECT group_influence(t, m) FROM (VALUES ('[100]'::airrep_vector, '[100]'::airrep_vector), ('[100]', '[200]')) v(t, m);
-- errors
SELECT group_influence(target, member, 'max') FROM members;
SELECT group_influence(target, member, NULL) FROM members;
SELECT group_influence(target, member) FROM members;
SELECT group_influence('[1,2,3]', member) FROM members WHERE grp = 1;
-- The states are plain bytea (a real type, so Citus can push the aggregates down); the
-- support functions check what they are given.
SELECT airrep_group_influence_step(NULL, '[1]', '[1]');
SELECT airrep_group_influence_final('\x00');
SELECT airrep_group_influence_combine('\x0001000000', NULL);
SELECT airrep_vector_sum_result('\x01');
SELECT airrep_vector_sum_merge(NULL, NULL) IS NULL AS both_empty;
-- a hand-made state cannot make a vector the type forbids: NaN, or no dimensions
SELECT airrep_vector_avg_result('\x01000000000000000100000000000000000000000000f87f');
SELECT airrep_vector_sum_result('\x01000000000000000000000000000000');
-- States are updated in place: windows (running and sliding) and aggregates that share one
-- state (sum and avg) still see each row once.
SELECT i, sum(v) OVER running AS running_sum, avg(v) OVER running AS running_avg,
       sum(v) OVER sliding AS sliding_sum,
       group_influence('[1,1]', v, 'sum') OVER sliding AS sliding_influence
FROM (VALUES (1, '[1,2]'::airrep_vector), (2, '[3,4]'), (3, '[-1,0]')) x(i, v)
WINDOW running AS (ORDER BY i), sliding AS (ORDER BY i ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
ORDER BY i;
DROP TABLE members;
