/* baseline_kmc.c: the repository's own plain-C lattice kMC baseline for benchmarks/kernel.py.

   A deliberately simple, serial kernel that shows what straightforward C reaches on the
   benchmark landscape; kmc is timed against it (or against any other reference kernel with
   the same command line, passed to benchmarks/kernel.py with --reference PATH).

   Landscape: simple cubic L^3, periodic, hop length 1, T = 300 K, attempt frequency 1e13 Hz,
   site energies uniform in [-0.025, 0.025] eV, one saddle energy per undirected bond uniform
   in [0.30, 0.40] eV, rate i -> j = nu exp(-(max(S_ij, E_i, E_j) - E_i) / kT) (docs/physics.md;
   with these ranges the max is always S_ij).

   MODE 0  one tracer without exclusion: Gillespie, linear scan over the six directions.
   MODE 1  lattice gas at concentration C with site exclusion: an event is drawn over the ions
           with probability proportional to each ion's total rate (occupancy ignored; binary
           search down a sum tree over the ions), then a direction by a linear scan; a hop
           onto an occupied site is a null event. The clock advances by Exp(R) per attempt,
           R the sum of all ions' totals, so it stays exact. Only successful hops count.

   Build:  gcc -O3 -march=native -o baseline_kmc baseline_kmc.c -lm
   Usage:  baseline_kmc MODE L HOPS [C]      e.g.  baseline_kmc 0 64 20000000
                                                   baseline_kmc 1 64 5000000 0.5
   Output (stdout, one line):
           mode M L L hops N time T s: X ns/hop, Y Mhops/s
   with T the simulated time; MODE 1 also prints "attempts K" on stderr. */

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define Z 6
#define NU 1e13
#define KT 0.025852 /* eV, k_B * 300 K */

/* splitmix64: small, fast and good enough for a timing baseline */
static uint64_t rng_state = 0x243F6A8885A308D3ULL;

static inline uint64_t next_u64(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* uniform in [0, 1) */
static inline double uniform(void) { return (double)(next_u64() >> 11) * 0x1.0p-53; }

/* Exp(1) / rate; 1 - u is in (0, 1], so the log is finite */
static inline double waiting_time(double rate) { return -log(1.0 - uniform()) / rate; }

static double wall_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void *checked_malloc(size_t bytes) {
    void *p = malloc(bytes);
    if (p == NULL) {
        fprintf(stderr, "baseline_kmc: out of memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

static void usage(void) {
    fprintf(stderr, "usage: baseline_kmc MODE L HOPS [C]   (MODE 0: tracer, 1: lattice gas)\n");
    exit(2);
}

/* direction k: 0 +x, 1 -x, 2 +y, 3 -y, 4 +z, 5 -z */
static long neighbour(long i, int k, long L) {
    long x = i % L, y = (i / L) % L, z = i / (L * L);
    switch (k) {
    case 0: x = (x + 1) % L; break;
    case 1: x = (x + L - 1) % L; break;
    case 2: y = (y + 1) % L; break;
    case 3: y = (y + L - 1) % L; break;
    case 4: z = (z + 1) % L; break;
    default: z = (z + L - 1) % L; break;
    }
    return x + L * (y + L * z);
}

/* direction chosen by a linear scan: first k with r < rate[0] + ... + rate[k] */
static inline int pick_direction(const double *rate, double r) {
    int k = 0;
    double sum = rate[0];
    while (sum <= r && k < Z - 1) {
        k++;
        sum += rate[k];
    }
    return k;
}

int main(int argc, char **argv) {
    if (argc < 4 || argc > 5) usage();
    int mode = atoi(argv[1]);
    long L = atol(argv[2]);
    long n_hops = (long)atof(argv[3]); /* accepts 2e7 as well as 20000000 */
    double c = argc > 4 ? atof(argv[4]) : 0.5;
    if ((mode != 0 && mode != 1) || L < 2 || n_hops < 1 || !(c > 0.0 && c < 1.0)) usage();
    long n_sites = L * L * L;

    /* site energies, then one saddle per bond (bond 3 i + a joins i and its + neighbour
       along axis a), then the rate table */
    double *energy = checked_malloc(sizeof(double) * n_sites);
    for (long i = 0; i < n_sites; i++) energy[i] = -0.025 + 0.05 * uniform();
    double *saddle = checked_malloc(sizeof(double) * 3 * n_sites);
    for (long b = 0; b < 3 * n_sites; b++) saddle[b] = 0.30 + 0.10 * uniform();
    int32_t *next = checked_malloc(sizeof(int32_t) * Z * n_sites);
    double *rate = checked_malloc(sizeof(double) * Z * n_sites);
    double *total = checked_malloc(sizeof(double) * n_sites);
    for (long i = 0; i < n_sites; i++) {
        total[i] = 0.0;
        for (int k = 0; k < Z; k++) {
            long j = neighbour(i, k, L);
            long bond = (k % 2 == 0) ? 3 * i + k / 2 : 3 * j + k / 2;
            double top = fmax(saddle[bond], fmax(energy[i], energy[j]));
            next[Z * i + k] = (int32_t)j;
            rate[Z * i + k] = NU * exp(-(top - energy[i]) / KT);
            total[i] += rate[Z * i + k];
        }
    }
    free(saddle);
    free(energy);

    double clock = 0.0, start = 0.0, elapsed = 0.0;
    long hops = 0;
    if (mode == 0) {
        long p = 0;
        start = wall_seconds();
        for (hops = 0; hops < n_hops; hops++) {
            int k = pick_direction(&rate[Z * p], uniform() * total[p]);
            clock += waiting_time(total[p]);
            p = next[Z * p + k];
        }
        elapsed = wall_seconds() - start;
    } else {
        long n_ions = (long)(c * (double)n_sites);
        if (n_ions < 1) n_ions = 1;
        uint8_t *occupied = calloc((size_t)n_sites, 1);
        long *site = checked_malloc(sizeof(long) * n_ions);
        if (occupied == NULL) usage();
        for (long a = 0; a < n_ions;) { /* random placement, one ion per site */
            long s = (long)(uniform() * (double)n_sites);
            if (s < n_sites && !occupied[s]) {
                occupied[s] = 1;
                site[a++] = s;
            }
        }
        /* sum tree over the ions: leaves at size + a, node v holds tree[2v] + tree[2v+1] */
        long size = 1;
        while (size < n_ions) size *= 2;
        double *tree = calloc((size_t)(2 * size), sizeof(double));
        if (tree == NULL) usage();
        for (long a = 0; a < n_ions; a++) tree[size + a] = total[site[a]];
        for (long v = size - 1; v >= 1; v--) tree[v] = tree[2 * v] + tree[2 * v + 1];
        long attempts = 0;
        start = wall_seconds();
        while (hops < n_hops) {
            double R = tree[1];
            double r = uniform() * R;
            long v = 1;
            while (v < size) { /* binary search down the tree */
                if (r < tree[2 * v] || tree[2 * v + 1] <= 0.0) {
                    v = 2 * v;
                } else {
                    r -= tree[2 * v];
                    v = 2 * v + 1;
                }
            }
            long a = v - size;
            if (a >= n_ions) a = n_ions - 1; /* rounding at the far end */
            long p = site[a];
            if (r > total[p]) r = total[p];
            int k = pick_direction(&rate[Z * p], r);
            clock += waiting_time(R);
            attempts++;
            long q = next[Z * p + k];
            if (occupied[q]) continue; /* null event: the clock has advanced all the same */
            occupied[p] = 0;
            occupied[q] = 1;
            site[a] = q;
            tree[v] = total[q];
            for (v /= 2; v >= 1; v /= 2) tree[v] = tree[2 * v] + tree[2 * v + 1];
            hops++;
        }
        elapsed = wall_seconds() - start;
        fprintf(stderr, "attempts %ld\n", attempts);
        free(tree);
        free(site);
        free(occupied);
    }
    printf("mode %d L %ld hops %ld time %.3e s: %.1f ns/hop, %.2f Mhops/s\n", mode, L, hops,
           clock, 1e9 * elapsed / (double)hops, (double)hops / elapsed / 1e6);
    free(total);
    free(rate);
    free(next);
    return 0;
}
