/* tally [-b BINS] [NUMBER...]: statistics of the numbers given, or of stdin. */
#include <stdlib.h>
#include <string.h>

#include "tally.h"

int main(int argc, char **argv) {
    int bins = 0, i = 1;
    if (argc > 2 && strcmp(argv[1], "-b") == 0) {
        bins = atoi(argv[2]);
        i = 3;
    }
    tally_vec v;
    tally_vec_init(&v);
    size_t bad = 0;
    if (i == argc) {
        bad = tally_read(stdin, &v);
    } else {
        for (; i < argc; i++) {
            double x;
            if (tally_parse(argv[i], &x) != 0 || tally_vec_push(&v, x) != 0)
                bad++;
        }
    }
    tally_stats s = tally_compute(&v);
    tally_print(stdout, &s);
    tally_histogram(stdout, &v, &s, bins, 40);
    tally_vec_free(&v);
    if (bad) {
        fprintf(stderr, "tally: %zu bad input(s) ignored\n", bad);
        return 1;
    }
    return 0;
}
