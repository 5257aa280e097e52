/* The smallest hora program in C: every rank contributes its rank number, and everyone gets
 * the sum. Build and run from the repository root:
 *
 *   cargo build --release -p hora-capi -p horovodrun
 *   cc -O2 -I framework-bindings/c/include examples/c/allreduce.c -o target/release/c_allreduce \
 *      -L target/release -lhora -Wl,-rpath,$PWD/target/release
 *   target/release/horovodrun -np 4 target/release/c_allreduce
 */
#include <stdio.h>

#include "hora.h"

int main(void) {
    if (hora_init() != HORA_STATUS_OK) {
        fprintf(stderr, "hora_init: %s\n", hora_last_error());
        return 1;
    }
    int rank, size;
    hora_rank(&rank);
    hora_size(&size);
    double value[4] = {rank, rank, rank, rank};
    hora_status s = hora_allreduce("value", value, 4, HORA_DTYPE_F64, HORA_OP_SUM);
    if (s != HORA_STATUS_OK) {
        fprintf(stderr, "rank %d: allreduce failed (%d): %s\n", rank, s, hora_last_error());
        return 1;
    }
    printf("rank %d of %d: sum of ranks = %g (expected %d)\n", rank, size, value[0],
           size * (size - 1) / 2);
    hora_shutdown();
    return value[0] == size * (size - 1) / 2 ? 0 : 1;
}
