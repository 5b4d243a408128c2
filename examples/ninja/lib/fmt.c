#include "tally.h"

void tally_print(FILE *out, const tally_stats *s) {
    fprintf(out, "n=%zu min=%g max=%g mean=%g median=%g stddev=%g\n",
            s->n, s->min, s->max, s->mean, s->median, s->stddev);
}
