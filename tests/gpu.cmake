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
# The whole model on GPUs against the CPU reference and the transformers fixture: one GPU,
# then sp = 2 on two GPUs (NCCL all-to-all); every family's fixture. Skipped (77) without
# enough GPUs.
set(UL_GPU_MPI_ENV "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;NCCL_NVLS_ENABLE=0;OMP_NUM_THREADS=4")
foreach(np 1 2)
  foreach(fx hf_tiny hf_tiny_tied qwen2_tiny qwen3_tiny mistral_tiny)
    add_test(NAME gpu_model_${fx}_sp${np} COMMAND ${UL_MPIRUN} -np ${np} $<TARGET_FILE:test_gpu_model> ${UL_FIXTURES}/${fx})
    set_tests_properties(gpu_model_${fx}_sp${np} PROPERTIES LABELS "gpu" SKIP_RETURN_CODE 77 TIMEOUT 300
                         ENVIRONMENT "${UL_GPU_MPI_ENV}")
  endforeach()
endforeach()
# 200 demo steps on one GPU against the CPU curve (skipped without a GPU).
add_test(NAME gpu_demo_tracks_cpu COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/gpu_demo_test.sh $<TARGET_FILE:ulysses>)
set_tests_properties(gpu_demo_tracks_cpu PROPERTIES LABELS "gpu" SKIP_RETURN_CODE 77 TIMEOUT 600
                     ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMP_NUM_THREADS=8")
# ZeRO 1/2 and optimizer offload on CUDA against --zero 0 (1 GPU; sp = 2 and dp_shard = 2 on
# two GPUs when present); skipped without a GPU.
add_test(NAME gpu_zero COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/zero_test.sh $<TARGET_FILE:ulysses> gpu)
set_tests_properties(gpu_zero PROPERTIES LABELS "gpu" SKIP_RETURN_CODE 77 TIMEOUT 600
                     ENVIRONMENT "${UL_GPU_MPI_ENV};MPIRUN=${MPIEXEC_EXECUTABLE} --oversubscribe")
# Checkpoint save + resume on CUDA (1 GPU; sp = 2 and sp = 2 with ZeRO 3 on two GPUs).
add_test(NAME gpu_checkpoint COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/test_checkpoint.sh $<TARGET_FILE:ulysses> gpu ${UL_FIXTURES})
set_tests_properties(gpu_checkpoint PROPERTIES LABELS "gpu" SKIP_RETURN_CODE 77 TIMEOUT 600
                     ENVIRONMENT "${UL_GPU_MPI_ENV};MPIRUN=${MPIEXEC_EXECUTABLE} --oversubscribe")
