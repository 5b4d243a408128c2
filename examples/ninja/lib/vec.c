#include <stdlib.h>

#include "tally.h"

void tally_vec_init(tally_vec *v) {
    v->data = NULL;
    v->len = v->cap = 0;
}

int tally_vec_push(tally_vec *v, double x) {
    if (v->len == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 16;
        double *data = realloc(v->data, cap * sizeof *data);
        if (!data)
            return -1;
        v->data = data;
        v->cap = cap;
    }
    v->data[v->len++] = x;
    return 0;
}

void tally_vec_free(tally_vec *v) {
    free(v->data);
    tally_vec_init(v);
}
