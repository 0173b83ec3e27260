# Summary of a `cuobjdump -sass` dump, one line per kernel: HGMMA and WARPGROUP.DEPBAR
# counts, local-memory accesses (LDL/STL: spills), and "ex2 under wgmma": of the MUFU.EX2
# in the code, those placed while a wgmma may still run (after an HGMMA or a
# WARPGROUP.DEPBAR.LE gsb0 above 0, before a DEPBAR.LE gsb0, 0x0). A static count over
# every path: how many of the softmax's exps can overlap the tensor cores. It is how the
# forward's missing overlap was found (bench/RESULTS.md, issue 21).
#   awk -f bench/attention/sass_summary.awk file.sass
function out() {
    if (f) printf "%-66s HGMMA %3d WGDEPBAR %3d LDL/STL %d ex2 under wgmma %d of %d\n", f, w, d, l, u, x
}
/Function :/ { out(); f = $3; w = 0; d = 0; l = 0; u = 0; x = 0; fl = 0; next }
/HGMMA/ { w++; fl = 1 }
/WARPGROUP.DEPBAR/ { d++; fl = ($0 ~ /gsb0, 0x0/) ? 0 : 1 }
/LDL|STL/ { l++ }
/MUFU.EX2/ { x++; if (fl) u++ }
END { out() }
