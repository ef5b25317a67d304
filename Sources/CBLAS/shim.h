// OpenBLAS's CBLAS interface (Debian: libopenblas-dev). Its cblas.h also declares
// openblas_set_num_threads / openblas_get_num_threads, which the engine uses to follow the
// thread-count setting. LAPACK (ssyevd_) comes from the same library.
#include <cblas.h>
