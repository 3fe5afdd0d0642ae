/* The MPI test program of the mpi-test image (contrib/testimage/build-mpi):
 * each rank prints its rank, the world size, its host and the sum of all
 * ranks, which MPI_Allreduce computes across nodes. */
#include <mpi.h>
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
	int rank, size, sum = 0;
	char host[256] = "";
	MPI_Init(&argc, &argv);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	gethostname(host, sizeof host - 1);
	MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
	printf("rank %d of %d on %s: sum %d\n", rank, size, host, sum);
	MPI_Finalize();
	return 0;
}
