"""Every public name of Horovod 0.28.1's framework modules exists in hora's, or is refused with
an error that says why and what to use instead (never a bare AttributeError).

The lists are Horovod's public names as its ``__init__.py`` files export them at tag v0.28.1,
minus what those files import only for their own use (``version``, ``K``, ``check_extension``,
``gpu_available``, ``split_list``, ...).
"""

import importlib

import pytest

HOROVOD_0_28_1 = {
    "hora.torch": """
        Adasum Average Compression DistributedOptimizer HorovodInternalError Max Min ProcessSet
        Product Sum SyncBatchNorm add_process_set allgather allgather_async allgather_object
        allreduce allreduce_ allreduce_async allreduce_async_ alltoall alltoall_async barrier
        broadcast broadcast_ broadcast_async broadcast_async_ broadcast_object
        broadcast_optimizer_state broadcast_parameters ccl_built cross_rank cross_size cuda_built
        ddl_built elastic global_process_set gloo_built gloo_enabled grouped_allgather
        grouped_allgather_async grouped_allreduce grouped_allreduce_ grouped_allreduce_async
        grouped_allreduce_async_ grouped_reducescatter grouped_reducescatter_async init
        is_initialized join local_rank local_size mpi_built mpi_enabled mpi_threads_supported
        nccl_built poll rank reducescatter reducescatter_async remove_process_set rocm_built
        shutdown size sparse_allreduce_async start_timeline stop_timeline synchronize
    """,
    "hora.tensorflow": """
        Adasum Average BroadcastGlobalVariablesHook Compression DistributedGradientTape
        DistributedOptimizer LocalGradientAggregationHelper Max Min PartialDistributedGradientTape
        ProcessSet Product Sum SyncBatchNormalization add_process_set allgather allgather_object
        allreduce alltoall broadcast broadcast_ broadcast_global_variables broadcast_object
        broadcast_object_fn broadcast_variables ccl_built check_num_rank_power_of_2 cross_rank
        cross_size cuda_built ddl_built elastic global_process_set gloo_built gloo_enabled
        grouped_allgather grouped_allreduce grouped_reducescatter
        handle_average_backwards_compatibility init is_homogeneous is_initialized join local_rank
        local_rank_op local_size local_size_op mpi_built mpi_enabled mpi_threads_supported
        nccl_built process_set_included_op rank rank_op reducescatter remove_process_set
        rocm_built shutdown size size_op start_timeline stop_timeline
    """,
    "hora.keras": """
        Adasum Average Compression DistributedOptimizer PartialDistributedOptimizer Sum allgather
        allreduce broadcast broadcast_global_variables callbacks ccl_built cross_rank cross_size
        cuda_built ddl_built elastic global_process_set gloo_built gloo_enabled init
        is_initialized load_model local_rank local_size mpi_built mpi_enabled
        mpi_threads_supported nccl_built rank reducescatter rocm_built shutdown size
        start_timeline stop_timeline
    """,
    "hora.tensorflow.keras": """
        Average Compression DistributedOptimizer ProcessSet Sum add_process_set allgather
        allreduce broadcast broadcast_global_variables callbacks ccl_built cross_rank cross_size
        cuda_built ddl_built elastic global_process_set gloo_built gloo_enabled init
        is_initialized load_model local_rank local_size mpi_built mpi_enabled
        mpi_threads_supported nccl_built rank reducescatter remove_process_set rocm_built
        shutdown size start_timeline stop_timeline
    """,
    "hora.keras.callbacks": """
        BestModelCheckpoint BroadcastGlobalVariablesCallback LearningRateScheduleCallback
        LearningRateWarmupCallback MetricAverageCallback
    """,
    "hora.tensorflow.keras.callbacks": """
        BestModelCheckpoint BroadcastGlobalVariablesCallback LearningRateScheduleCallback
        LearningRateWarmupCallback MetricAverageCallback
    """,
}

# Names hora refuses for now: a module whose every name raises NotImplementedError saying why.
REFUSED = {
    "elastic": ("run", "elastic training"),
}

CASES = [(face, name) for face, names in HOROVOD_0_28_1.items() for name in names.split()]


def _face(face):
    if face != "hora.torch":
        pytest.importorskip("tensorflow")
    return importlib.import_module(face)


@pytest.mark.parametrize("face,name", CASES, ids=[f"{f}.{n}" for f, n in CASES])
def test_every_horovod_name_is_there_or_refused_with_a_reason(face, name):
    module = _face(face)
    assert hasattr(module, name), f"{face}.{name} is missing"
    if name in REFUSED:
        member, words = REFUSED[name]
        with pytest.raises(NotImplementedError) as e:
            getattr(getattr(module, name), member)
        message = str(e.value)
        assert words in message and "hora" in message, message
