# CUDA backend against the CPU backend (tests/test_cuda_kernels.c). Label "gpu": run with
# `ctest -L gpu`. Without a visible GPU (or without the CUDA backend) the test exits 77
# and ctest reports it as skipped.
add_test(NAME test_cuda_kernels COMMAND test_cuda_kernels)
set_tests_properties(test_cuda_kernels PROPERTIES LABELS "gpu" SKIP_RETURN_CODE 77 TIMEOUT 600
                     ENVIRONMENT "OMP_NUM_THREADS=8")
# The matmul cases again, every product on the fallback kernel (the path taken for shapes
# cuBLASLt has no algorithm for).
add_test(NAME test_cuda_kernels_matmul_fallback COMMAND test_cuda_kernels --only matmul)
set_tests_properties(test_cuda_kernels_matmul_fallback PROPERTIES LABELS "gpu" SKIP_RETURN_CODE 77 TIMEOUT 120
                     ENVIRONMENT "UL_CUDA_MATMUL_FALLBACK=1")
