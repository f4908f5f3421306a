"""When an elementwise kernel is worth splitting over OpenMP threads."""

cdef enum:
    # Below this many elements a parallel region costs more than it saves.
    PARALLEL_MIN_ELEMENTS = 32768


cdef inline int threads_for(Py_ssize_t n_elements, int n_threads) noexcept nogil:
    """The thread count for a kernel over n_elements: n_threads, or 1 for small work."""
    if n_threads < 1 or n_elements < PARALLEL_MIN_ELEMENTS:
        return 1
    return n_threads
