#include <math.h>
#include <stdlib.h>

#include "tally.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

tally_stats tally_compute(tally_vec *v) {
    tally_stats s = {0};
    if (v->len == 0)
        return s;
    qsort(v->data, v->len, sizeof *v->data, cmp_double);
    s.n = v->len;
    s.min = v->data[0];
    s.max = v->data[v->len - 1];
    double sum = 0;
    for (size_t i = 0; i < v->len; i++)
        sum += v->data[i];
    s.mean = sum / (double)v->len;
    size_t mid = v->len / 2;
    s.median = v->len % 2 ? v->data[mid] : (v->data[mid - 1] + v->data[mid]) / 2;
    double var = 0;
    for (size_t i = 0; i < v->len; i++)
        var += (v->data[i] - s.mean) * (v->data[i] - s.mean);
    s.stddev = sqrt(var / (double)v->len);
    return s;
}
