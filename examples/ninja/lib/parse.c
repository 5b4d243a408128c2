#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "tally.h"

int tally_parse(const char *text, double *out) {
    char *end;
    errno = 0;
    double x = strtod(text, &end);
    if (end == text || *end != '\0' || errno == ERANGE || !isfinite(x))
        return -1;
    *out = x;
    return 0;
}

size_t tally_read(FILE *f, tally_vec *v) {
    char token[128];
    size_t bad = 0;
    while (fscanf(f, "%127s", token) == 1) {
        double x;
        if (tally_parse(token, &x) != 0 || tally_vec_push(v, x) != 0)
            bad++;
    }
    return bad;
}
