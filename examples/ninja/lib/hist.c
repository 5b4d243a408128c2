#include <stdlib.h>

#include "tally.h"

void tally_histogram(FILE *out, const tally_vec *v, const tally_stats *s, int bins, int width) {
    if (s->n == 0 || bins < 1)
        return;
    size_t *count = calloc((size_t)bins, sizeof *count);
    if (!count)
        return;
    double span = s->max - s->min;
    size_t top = 0;
    for (size_t i = 0; i < v->len; i++) {
        int b = span > 0 ? (int)((v->data[i] - s->min) / span * bins) : 0;
        if (b >= bins)
            b = bins - 1;
        if (++count[b] > top)
            top = count[b];
    }
    for (int b = 0; b < bins; b++) {
        double lo = s->min + span * b / bins;
        int bar = (int)(count[b] * (size_t)width / top);
        fprintf(out, "%10.3g | ", lo);
        for (int i = 0; i < bar; i++)
            fputc('#', out);
        fprintf(out, " %zu\n", count[b]);
    }
    free(count);
}
