# Sourced by the benches: the SIMD tier to measure and the peers held to the same
# instruction set (issue 26).
#   AIRREP_SIMD = auto (default) | avx512 | avx2 | portable
# Sets SIMD_BEST (the best tier this CPU has), SIMD_TIER (the tier measured, auto resolved)
# and, when SIMD_TIER is below SIMD_BEST, restricts in the environment of this shell:
#   PyTorch: ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS;
#   numpy (OpenBLAS): OPENBLAS_CORETYPE (Haswell for avx2, Core2 for portable).
# SQL sessions get `SET airrep.simd = $SIMD_TIER` through $SIMD_SQL.
# pgvector picks its own kernels (its FMA clone where the CPU has FMA) and cannot be held.
simd_flags=$(grep -m1 '^flags' /proc/cpuinfo)
if [[ " $simd_flags " == *" avx512f "* ]]; then
    SIMD_BEST=avx512
elif [[ " $simd_flags " == *" avx2 "* && " $simd_flags " == *" fma "* ]]; then
    SIMD_BEST=avx2
else
    SIMD_BEST=portable
fi
SIMD_TIER=${AIRREP_SIMD:-auto}
[ "$SIMD_TIER" = auto ] && SIMD_TIER=$SIMD_BEST
case "$SIMD_TIER" in avx512 | avx2 | portable) ;; *) echo "AIRREP_SIMD: unknown tier $SIMD_TIER" >&2; exit 2 ;; esac
export AIRREP_SIMD=$SIMD_TIER
SIMD_SQL="SET airrep.simd = $SIMD_TIER;"
simd_rank() { case "$1" in avx512) echo 2 ;; avx2) echo 1 ;; *) echo 0 ;; esac; }
if [ "$(simd_rank "$SIMD_TIER")" -lt "$(simd_rank "$SIMD_BEST")" ]; then
    if [ "$SIMD_TIER" = avx2 ]; then
        export ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
        export OPENBLAS_CORETYPE=Haswell
    else
        export ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_ENABLE_INSTRUCTIONS=SSE4_2
        export OPENBLAS_CORETYPE=Core2
    fi
    SIMD_PEERS="peers held to $SIMD_TIER: ATEN_CPU_CAPABILITY=$ATEN_CPU_CAPABILITY ONEDNN_MAX_CPU_ISA=$ONEDNN_MAX_CPU_ISA MKL_ENABLE_INSTRUCTIONS=$MKL_ENABLE_INSTRUCTIONS OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE"
else
    SIMD_PEERS="peers at their own best"
fi
echo "==> SIMD tier $SIMD_TIER (this CPU's best: $SIMD_BEST); $SIMD_PEERS"
