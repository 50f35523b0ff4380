/* embbert: one text per line on stdin -> one line per text on stdout: the label name, then the logits.
 *
 *   ./embbert [--ids] [--ids-in] [--stats] [--paint N] < texts.txt
 *   --ids     print the token ids instead of running the model
 *   --ids-in  read whitespace-separated ids per line instead of text
 *   --stats   on stderr: arena bytes, high-water mark, guard, inferences and microseconds per inference
 *   --paint N fill the arena with byte N before the first inference (the high-water mark is measured
 *             against it; default 165)
 * A line longer than EMBBERT_MAX_LINE bytes is cut there (only its first EMBBERT_MAX_LEN pieces count).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "embbert.h"

#ifndef EMBBERT_MAX_LINE
#define EMBBERT_MAX_LINE 65536
#endif

static char line[EMBBERT_MAX_LINE + 2];
static int32_t ids[EMBBERT_MAX_LEN];

static int read_ids(const char *s, int32_t *out) {
  int n = 0;
  char *end;
  for (;;) {
    long v = strtol(s, &end, 10);
    if (end == s) break;
    if (n == EMBBERT_MAX_LEN) return -1;
    out[n++] = (int32_t)v;
    s = end;
  }
  return n;
}

int main(int argc, char **argv) {
  int print_ids = 0, ids_in = 0, stats = 0, a, count = 0, lineno = 0;
  unsigned pattern = 165;
  double seconds = 0.0;
  for (a = 1; a < argc; a++) {
    if (!strcmp(argv[a], "--ids")) print_ids = 1;
    else if (!strcmp(argv[a], "--ids-in")) ids_in = 1;
    else if (!strcmp(argv[a], "--stats")) stats = 1;
    else if (!strcmp(argv[a], "--paint") && a + 1 < argc) pattern = (unsigned)strtoul(argv[++a], NULL, 10) & 0xffu;
    else { fprintf(stderr, "usage: %s [--ids] [--ids-in] [--stats] [--paint N] < lines\n", argv[0]); return 2; }
  }
  embbert_arena_paint((uint8_t)pattern);
  while (fgets(line, sizeof line, stdin)) {
    size_t len = strlen(line);
    int n, i;
    float logits[EMBBERT_NUM_LABELS];
    lineno++;
    if (len > 0 && line[len - 1] == '\n') line[--len] = '\0';
    else if (len == sizeof line - 1) { /* over-long: drop the rest of the line */
      int ch;
      while ((ch = getchar()) != EOF && ch != '\n') {}
    }
    if (ids_in) {
      n = read_ids(line, ids);
      if (n <= 0) { fprintf(stderr, "line %d: expected 1 to %d ids\n", lineno, EMBBERT_MAX_LEN); return 1; }
    } else {
      n = embbert_tokenize(line, len, ids);
    }
    if (print_ids) {
      for (i = 0; i < n; i++) printf(i ? " %ld" : "%ld", (long)ids[i]);
      printf("\n");
      continue;
    }
    {
      clock_t t0 = clock();
      if (embbert_forward(ids, n, logits) != 0) {
        fprintf(stderr, "line %d: ids out of range [0, %d)\n", lineno, EMBBERT_VOCAB_SIZE);
        return 1;
      }
      seconds += (double)(clock() - t0) / CLOCKS_PER_SEC;
    }
    count++;
    printf("%s", embbert_label_names[EMBBERT_NUM_LABELS > 1 ? embbert_argmax(logits) : 0]);
    for (i = 0; i < EMBBERT_NUM_LABELS; i++) printf(" %.9g", logits[i]);
    printf("\n");
  }
  if (stats)
    fprintf(stderr, "arena_bytes=%lu high_water=%lu guard_ok=%d inferences=%d us_per_inference=%.1f\n",
            (unsigned long)EMBBERT_ARENA_BYTES, (unsigned long)embbert_arena_high_water((uint8_t)pattern),
            embbert_arena_guard_ok((uint8_t)pattern), count, count ? 1e6 * seconds / count : 0.0);
  return 0;
}
