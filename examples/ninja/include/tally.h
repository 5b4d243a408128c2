/* tally: summary statistics and a histogram of numbers. */
#ifndef TALLY_H
#define TALLY_H

#include <stddef.h>
#include <stdio.h>

/* A growable array of doubles. */
typedef struct {
    double *data;
    size_t len, cap;
} tally_vec;

void tally_vec_init(tally_vec *v);
int tally_vec_push(tally_vec *v, double x); /* 0 on success, -1 out of memory */
void tally_vec_free(tally_vec *v);

/* Parse one number; 0 on success, -1 if `text` is not entirely a number. */
int tally_parse(const char *text, double *out);
/* Parse every whitespace-separated number in `f`; returns the count of bad tokens. */
size_t tally_read(FILE *f, tally_vec *v);

typedef struct {
    size_t n;
    double min, max, mean, median, stddev;
} tally_stats;

/* Sorts `v` in place. n == 0 leaves the other fields 0. */
tally_stats tally_compute(tally_vec *v);

/* Histogram of `v` (sorted) in `bins` bins, bars at most `width` wide. */
void tally_histogram(FILE *out, const tally_vec *v, const tally_stats *s, int bins, int width);

void tally_print(FILE *out, const tally_stats *s);

#endif
