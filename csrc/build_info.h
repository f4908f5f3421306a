/* What the extensions were compiled with, readable from Cython. */
#ifdef _OPENMP
#define FASTNN_OPENMP 1
#else
#define FASTNN_OPENMP 0
#endif
