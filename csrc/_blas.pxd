"""The one home of BLAS: row-major GEMM and GEMV, AXPY and DOT, for float32 and float64.

BLAS is column-major; a row-major matrix is the column-major view of its transpose,
so a row-major product C = op(A) @ op(B) is computed as the column-major product
C.T = op(B).T @ op(A).T by swapping the operands (no copies). Every kernel cimports
these wrappers; no other module spells a BLAS signature. BLAS comes from
scipy.linalg.cython_blas, so nothing extra is installed or linked.
"""
from cython cimport floating
from scipy.linalg cimport cython_blas as blas


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      floating alpha, const floating* a, int lda,
                      const floating* b, int ldb, floating beta,
                      floating* c, int ldc) noexcept nogil:
    """C (m x n) = alpha * op(A) @ op(B) + beta * C, all row-major.

    op(A) is m x k and op(B) is k x n; lda/ldb/ldc are row strides in elements.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if floating is float:
        blas.sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*> b, &ldb, <float*> a, &lda,
                   &beta, c, &ldc)
    else:
        blas.dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*> b, &ldb, <double*> a, &lda,
                   &beta, c, &ldc)


cdef inline void gemv(bint trans_a, int m, int n, floating alpha, const floating* a, int lda,
                      const floating* x, floating beta, floating* y) noexcept nogil:
    """y = alpha * op(A) @ x + beta * y for a row-major A of m rows and n columns."""
    # Row-major A is the column-major n x m matrix A.T: flip the transpose flag.
    cdef char t = b'N' if trans_a else b'T'
    cdef int one = 1
    if floating is float:
        blas.sgemv(&t, &n, &m, &alpha, <float*> a, &lda, <float*> x, &one, &beta, y, &one)
    else:
        blas.dgemv(&t, &n, &m, &alpha, <double*> a, &lda, <double*> x, &one, &beta, y, &one)


cdef inline void axpy(int n, floating alpha, const floating* x, floating* y) noexcept nogil:
    """y += alpha * x."""
    cdef int one = 1
    if floating is float:
        blas.saxpy(&n, &alpha, <float*> x, &one, y, &one)
    else:
        blas.daxpy(&n, &alpha, <double*> x, &one, y, &one)


cdef inline double sum_of_squares(int n, const floating* x) noexcept nogil:
    """sum(x[i]^2), accumulated in double (dsdot for float32)."""
    cdef int one = 1
    if floating is float:
        return blas.dsdot(&n, <float*> x, &one, <float*> x, &one)
    else:
        return blas.ddot(&n, <double*> x, &one, <double*> x, &one)
