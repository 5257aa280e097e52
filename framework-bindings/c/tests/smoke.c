/* Exercises the C ABI under `horovodrun -np N`: every collective, the async form, and the
 * error paths (each must return a status code and a message, never crash). Prints
 * "rank R: C ABI OK" on success; exits 1 with a message on the first wrong result. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hora.h"

static int rank, size;

#define CHECK(cond, ...)                                              \
    do {                                                              \
        if (!(cond)) {                                                \
            fprintf(stderr, "rank %d: check failed at line %d: ", rank, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                             \
            fprintf(stderr, " (last error: %s)\n", hora_last_error()); \
            exit(1);                                                  \
        }                                                             \
    } while (0)

#define OK(call) CHECK((call) == HORA_STATUS_OK, "%s", #call)

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(void) {
    CHECK(hora_rank(&rank) == HORA_STATUS_NOT_INITIALIZED, "rank before init");
    OK(hora_init());
    OK(hora_rank(&rank));
    OK(hora_size(&size));
    int local;
    OK(hora_local_rank(&local));

    /* allreduce, several sizes, float sum and int64 max */
    size_t counts[] = {0, 1, 7, 1000, 300001};
    for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
        size_t n = counts[k];
        float *f = malloc((n + 1) * sizeof *f);
        int64_t *l = malloc((n + 1) * sizeof *l);
        for (size_t i = 0; i < n; i++) {
            f[i] = (float)(rank + 1);
            l[i] = (int64_t)(i * (rank + 1));
        }
        char name[64];
        snprintf(name, sizeof name, "f.%zu", n);
        OK(hora_allreduce(name, f, n, HORA_DTYPE_F32, HORA_OP_SUM));
        snprintf(name, sizeof name, "l.%zu", n);
        OK(hora_allreduce(name, l, n, HORA_DTYPE_I64, HORA_OP_MAX));
        for (size_t i = 0; i < n; i++) {
            CHECK(f[i] == size * (size + 1) / 2.0f, "sum[%zu] = %f", i, f[i]);
            CHECK(l[i] == (int64_t)(i * size), "max[%zu] = %lld", i, (long long)l[i]);
        }
        free(f);
        free(l);
    }

    /* async form with poll, and a NULL name */
    double avg[16];
    for (int i = 0; i < 16; i++) avg[i] = rank;
    hora_handle *h = NULL;
    OK(hora_allreduce_async(NULL, avg, 16, HORA_DTYPE_F64, HORA_OP_AVERAGE, &h));
    while (!hora_poll(h)) {
    }
    OK(hora_wait(h));
    CHECK(fabs(avg[3] - (size - 1) / 2.0) < 1e-12, "average %f", avg[3]);

    /* ragged allgather: rank r contributes r+1 ints */
    int mine[64], all[1024];
    for (int i = 0; i <= rank; i++) mine[i] = rank * 100 + i;
    size_t got = 0;
    OK(hora_allgather("ag", mine, rank + 1, HORA_DTYPE_I32, all, 1024, &got));
    CHECK(got == (size_t)(size * (size + 1) / 2), "allgather count %zu", got);
    for (int r = 0, k = 0; r < size; r++)
        for (int i = 0; i <= r; i++, k++) CHECK(all[k] == r * 100 + i, "allgather[%d] = %d", k, all[k]);

    /* broadcast from every root */
    for (int root = 0; root < size; root++) {
        uint8_t b[5];
        memset(b, rank, sizeof b);
        char name[32];
        snprintf(name, sizeof name, "b.%d", root);
        OK(hora_broadcast(name, b, 5, HORA_DTYPE_U8, root));
        CHECK(b[4] == root, "broadcast from %d gave %d", root, b[4]);
    }

    /* uneven alltoall: d+1 elements to rank d */
    size_t send[64], recv[64], total = 0;
    for (int d = 0; d < size; d++) total += (send[d] = d + 1);
    int32_t *in = malloc(total * sizeof *in), out[4096];
    for (size_t i = 0; i < total; i++) in[i] = rank;
    OK(hora_alltoall("a2a", in, send, HORA_DTYPE_I32, out, 4096, recv));
    for (int s = 0, k = 0; s < size; s++) {
        CHECK(recv[s] == (size_t)rank + 1, "recv_counts[%d] = %zu", s, recv[s]);
        for (int i = 0; i <= rank; i++, k++) CHECK(out[k] == s, "alltoall[%d] = %d", k, out[k]);
    }
    free(in);

    /* reducescatter of 10*size+1 elements */
    size_t rn = 10 * size + 1, share = 0;
    float *rs = malloc(rn * sizeof *rs), rsout[64];
    for (size_t i = 0; i < rn; i++) rs[i] = 1.0f;
    OK(hora_reducescatter("rs", rs, rn, HORA_DTYPE_F32, HORA_OP_SUM, rsout, 64, &share));
    CHECK(share == (size_t)(rank == 0 ? 11 : 10), "reducescatter share %zu", share);
    CHECK(rsout[0] == (float)size, "reducescatter value %f", rsout[0]);
    free(rs);
    OK(hora_barrier());

    /* grouped allreduce: three tensors of two dtypes, negotiated and fused as one group */
    {
        float g0[5];
        double g1[3];
        float g2[700];
        for (int i = 0; i < 5; i++) g0[i] = rank + i;
        for (int i = 0; i < 3; i++) g1[i] = 2.0 * rank;
        for (int i = 0; i < 700; i++) g2[i] = 1.0f;
        void *bufs[3] = {g0, g1, g2};
        size_t counts[3] = {5, 3, 700};
        hora_dtype dts[3] = {HORA_DTYPE_F32, HORA_DTYPE_F64, HORA_DTYPE_F32};
        OK(hora_grouped_allreduce("group", 3, bufs, counts, dts, HORA_OP_SUM));
        float ranks = size * (size - 1) / 2.0f;
        for (int i = 0; i < 5; i++) CHECK(g0[i] == ranks + size * i, "group[0][%d] = %f", i, g0[i]);
        for (int i = 0; i < 3; i++) CHECK(g1[i] == 2.0 * ranks, "group[1][%d] = %f", i, g1[i]);
        CHECK(g2[699] == (float)size, "group[2] = %f", g2[699]);
        hora_handle *hs[3];
        OK(hora_grouped_allreduce_async(NULL, 3, bufs, counts, dts, HORA_OP_MAX, hs));
        for (int i = 0; i < 3; i++) OK(hora_wait(hs[i]));
        CHECK(g2[0] == (float)size, "group max %f", g2[0]);
        CHECK(hora_grouped_allreduce("group.null", 3, NULL, counts, dts, HORA_OP_SUM) == HORA_STATUS_INVALID_ARGUMENT,
              "NULL bufs accepted");
        CHECK(strstr(hora_last_error(), "bufs") != NULL, "message: %s", hora_last_error());
        /* a member whose length differs by rank fails the group on every rank, naming it */
        counts[1] = 2 + rank;
        hora_status gs = hora_grouped_allreduce("group.bad", 3, bufs, counts, dts, HORA_OP_SUM);
        CHECK(gs == HORA_STATUS_MISMATCH, "grouped mismatch gave %d", gs);
        CHECK(strstr(hora_last_error(), "group.bad") != NULL, "message: %s", hora_last_error());
    }

    /* error paths: status codes and messages, no crash */
    CHECK(hora_allreduce("null", NULL, 4, HORA_DTYPE_F32, HORA_OP_SUM) == HORA_STATUS_INVALID_ARGUMENT,
          "NULL buffer accepted");
    CHECK(strstr(hora_last_error(), "NULL") != NULL, "message: %s", hora_last_error());
    uint8_t one = 0;
    CHECK(hora_broadcast("badroot", &one, 1, HORA_DTYPE_U8, 99) == HORA_STATUS_INVALID_ARGUMENT,
          "broadcast root 99 accepted");
    CHECK(hora_rank(NULL) == HORA_STATUS_INVALID_ARGUMENT, "NULL out pointer accepted");
    CHECK(hora_wait(NULL) == HORA_STATUS_INVALID_ARGUMENT, "NULL handle accepted");
    float mm[8] = {0};
    hora_status s = hora_allreduce("grad/mismatch", mm, 4 + rank, HORA_DTYPE_F32, HORA_OP_SUM);
    CHECK(s == HORA_STATUS_MISMATCH, "mismatch gave %d", s);
    CHECK(strstr(hora_last_error(), "grad/mismatch") != NULL, "message: %s", hora_last_error());
    int small[1];
    CHECK(hora_allgather("cap", mine, rank + 1, HORA_DTYPE_I32, small, 1, &got) == HORA_STATUS_INVALID_ARGUMENT,
          "too-small output accepted");

    /* process sets: the even and the odd ranks, each running collectives on its own */
    int evens[8], odds[8], ne = 0, no = 0, even_id = -1, odd_id = -1;
    for (int r = 0; r < size; r++) {
        if (r % 2 == 0) evens[ne++] = r; else odds[no++] = r;
    }
    OK(hora_process_set_add(evens, ne, &even_id));
    OK(hora_process_set_add(odds, no, &odd_id));
    CHECK(even_id == 1 && odd_id == 2, "set ids %d %d", even_id, odd_id);
    int my_set = rank % 2 == 0 ? even_id : odd_id, other = rank % 2 == 0 ? odd_id : even_id;
    int set_size = -1, set_rank = -1;
    OK(hora_process_set_size(my_set, &set_size));
    OK(hora_process_set_rank(my_set, &set_rank));
    CHECK(set_size == (rank % 2 == 0 ? ne : no) && set_rank == rank / 2, "set size %d rank %d", set_size, set_rank);
    CHECK(hora_process_set_included(my_set) == 1 && hora_process_set_included(other) == 0, "included");
    CHECK(hora_process_set_included(42) == -1, "set 42 included?");
    double sv[3] = {rank, rank, rank}, want = 0;
    for (int r = rank % 2; r < size; r += 2) want += r;
    OK(hora_allreduce_in(my_set, "set.ar", sv, 3, HORA_DTYPE_F64, HORA_OP_SUM));
    CHECK(sv[0] == want && sv[2] == want, "set allreduce %f, want %f", sv[0], want);
    int32_t me32 = rank, gathered[8];
    size_t ng = 0;
    OK(hora_allgather_in(my_set, "set.ag", &me32, 1, HORA_DTYPE_I32, gathered, 8, &ng));
    CHECK(ng == (size_t)set_size, "set allgather count %zu", ng);
    for (size_t i = 0; i < ng; i++) CHECK(gathered[i] == (int32_t)(2 * i + rank % 2), "set allgather[%zu]", i);
    int32_t b = rank;
    int root = rank % 2; /* the set's first member, as a job rank */
    OK(hora_broadcast_in(my_set, "set.bc", &b, 1, HORA_DTYPE_I32, root));
    CHECK(b == root, "set broadcast %d", b);
    OK(hora_barrier_in(my_set));
    CHECK(hora_allreduce_in(other, "set.other", sv, 3, HORA_DTYPE_F64, HORA_OP_SUM) == HORA_STATUS_INVALID_ARGUMENT,
          "a set this rank is not in accepted");
    CHECK(strstr(hora_last_error(), "is not in process set") != NULL, "message: %s", hora_last_error());
    CHECK(hora_broadcast_in(my_set, "set.badroot", &b, 1, HORA_DTYPE_I32, 1 - root) == HORA_STATUS_INVALID_ARGUMENT,
          "a root outside the set accepted");
    int bad_ranks[1] = {size + 3}, bad_id = -1;
    CHECK(hora_process_set_add(bad_ranks, 1, &bad_id) == HORA_STATUS_INVALID_ARGUMENT, "rank size+3 accepted");
    OK(hora_process_set_remove(odd_id));
    OK(hora_process_set_remove(even_id));
    CHECK(hora_allreduce_in(my_set, "set.gone", sv, 3, HORA_DTYPE_F64, HORA_OP_SUM) == HORA_STATUS_INVALID_ARGUMENT,
          "a removed set accepted");

    /* per-call overhead of a 4 KiB allreduce */
    float four[1024];
    double t[1000];
    for (int i = 0; i < 1000; i++) {
        double t0 = now_us();
        OK(hora_allreduce("lat", four, 1024, HORA_DTYPE_F32, HORA_OP_SUM));
        t[i] = now_us() - t0;
    }
    qsort(t, 1000, sizeof t[0], cmp_double);
    if (rank == 0) printf("4 KiB allreduce from C: median %.1f us, p90 %.1f us\n", t[500], t[900]);

    int last = -1;
    OK(hora_join(&last));
    CHECK(last >= 0 && last < size, "join returned %d", last);
    OK(hora_shutdown());
    CHECK(hora_rank(&rank) == HORA_STATUS_NOT_INITIALIZED, "rank after shutdown");
    printf("rank %d: C ABI OK\n", local >= 0 ? rank : -1);
    return 0;
}
