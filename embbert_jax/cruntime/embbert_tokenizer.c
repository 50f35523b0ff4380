/* Text -> ids, as embbert_jax.tokenizer.Tokenizer.encode_batch (single texts): data.normalize_text, then
 * sentencepiece BPE, then "[CLS] pieces", truncated to EMBBERT_MAX_LEN.
 *
 * Normalisation is a table generated from data.normalize_text itself, one entry per code point c whose
 * image f(c) = drop_Mn(NFKD(c.lower())) differs from c and matters to the ids (it is empty, or holds a
 * vocabulary character or whitespace); Python whitespace maps to ' '. Then whitespace runs collapse and
 * the ends are trimmed, as " ".join(text.split()).
 * BPE, as sentencepiece's bpe_model.cc: every character is a symbol; repeatedly merge the adjacent pair
 * whose concatenation is the piece of highest score (the lowest id: the exporter checks that scores fall
 * with id), leftmost on ties. A word starts at U+2581 (the space, and the dummy prefix); no piece holds an
 * inner U+2581 (checked at export), so words are independent and run one at a time through a buffer of
 * EMBBERT_WORD_MAX characters (a longer word is cut into chunks of that many: the one documented
 * difference from Python). Characters outside the vocabulary are [UNK]; a run of [UNK] becomes one.
 * A literal U+2581 in the text is a word boundary too, and trailing ones vanish, as in sentencepiece.
 * In the tables U+2581 is stored as the single byte ' '.
 */
#include <string.h>

#include "embbert.h"

/* The word being built: UTF-8 bytes and its symbols (byte ranges, linked while merging). */
static uint8_t word_bytes[EMBBERT_WORD_MAX * 4 + 1];
static uint16_t sym_start[EMBBERT_WORD_MAX + 1], sym_len[EMBBERT_WORD_MAX + 1];
static int16_t sym_next[EMBBERT_WORD_MAX + 1], sym_prev[EMBBERT_WORD_MAX + 1];
static int32_t pair_rank[EMBBERT_WORD_MAX + 1];

typedef struct {
  int32_t *ids;
  int n, word_syms, word_len, full;
} tok_state_t;

/* Id of the normal piece spelled by bytes s[0..len), or -1 (binary search over the sorted index). */
static int32_t piece_id(const uint8_t *s, int len) {
  int lo = 0, hi = EMBBERT_TOK_NORMAL - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2, id = embbert_tok_sorted[mid], plen, c;
    const uint8_t *p = embbert_tok_bytes + embbert_tok_offsets[id];
    plen = (int)(embbert_tok_offsets[id + 1] - embbert_tok_offsets[id]);
    c = memcmp(p, s, (size_t)(plen < len ? plen : len));
    if (c == 0) c = plen - len;
    if (c == 0) return id;
    if (c < 0) lo = mid + 1; else hi = mid - 1;
  }
  return -1;
}

static void emit(tok_state_t *st, int32_t id) {
  if (st->n >= EMBBERT_MAX_LEN) { st->full = 1; return; }
  if (id == EMBBERT_UNK_ID && st->n > 0 && st->ids[st->n - 1] == EMBBERT_UNK_ID && st->n > EMBBERT_ADD_CLS) return;
  st->ids[st->n++] = id;
}

static void rank_pair(int i) {
  int j = sym_next[i];
  int32_t id = j < 0 ? -1 : piece_id(word_bytes + sym_start[i], sym_len[i] + sym_len[j]);
  pair_rank[i] = id < 0 ? INT32_MAX : id;
}

/* BPE over the current word, then emit its pieces. */
static void flush_word(tok_state_t *st) {
  int i, count = st->word_syms;
  if (count == 0) return;
  for (i = 0; i < count; i++) { sym_next[i] = (int16_t)(i + 1 < count ? i + 1 : -1); sym_prev[i] = (int16_t)(i - 1); }
  for (i = 0; i < count; i++) rank_pair(i);
  for (;;) {
    int best = -1, j;
    int32_t best_rank = INT32_MAX;
    for (i = 0; i >= 0; i = sym_next[i])
      if (pair_rank[i] < best_rank) { best_rank = pair_rank[i]; best = i; }
    if (best < 0) break;
    j = sym_next[best];
    sym_len[best] = (uint16_t)(sym_len[best] + sym_len[j]);
    sym_next[best] = sym_next[j];
    if (sym_next[j] >= 0) sym_prev[sym_next[j]] = (int16_t)best;
    rank_pair(best);
    if (sym_prev[best] >= 0) rank_pair(sym_prev[best]);
  }
  for (i = 0; i >= 0; i = sym_next[i]) {
    int32_t id = piece_id(word_bytes + sym_start[i], sym_len[i]);
    emit(st, id < 0 ? EMBBERT_UNK_ID : id);
  }
  st->word_syms = st->word_len = 0;
}

/* Appends one character (UTF-8 bytes) as a new symbol of the current word. */
static void add_symbol(tok_state_t *st, const uint8_t *b, int len) {
  if (st->word_syms == EMBBERT_WORD_MAX) flush_word(st);
  sym_start[st->word_syms] = (uint16_t)st->word_len;
  sym_len[st->word_syms] = (uint16_t)len;
  memcpy(word_bytes + st->word_len, b, (size_t)len);
  st->word_len += len;
  st->word_syms++;
}

static int utf8_encode(uint32_t cp, uint8_t *out) {
  if (cp < 0x80u) { out[0] = (uint8_t)cp; return 1; }
  if (cp < 0x800u) { out[0] = (uint8_t)(0xc0u | (cp >> 6)); out[1] = (uint8_t)(0x80u | (cp & 0x3fu)); return 2; }
  if (cp < 0x10000u) {
    out[0] = (uint8_t)(0xe0u | (cp >> 12)); out[1] = (uint8_t)(0x80u | ((cp >> 6) & 0x3fu));
    out[2] = (uint8_t)(0x80u | (cp & 0x3fu));
    return 3;
  }
  out[0] = (uint8_t)(0xf0u | (cp >> 18)); out[1] = (uint8_t)(0x80u | ((cp >> 12) & 0x3fu));
  out[2] = (uint8_t)(0x80u | ((cp >> 6) & 0x3fu)); out[3] = (uint8_t)(0x80u | (cp & 0x3fu));
  return 4;
}

/* Decodes one code point at s[*i]; malformed input gives U+FFFD per maximal invalid subpart (as Python's
 * errors="replace"). */
static uint32_t utf8_next(const uint8_t *s, size_t len, size_t *i) {
  uint8_t b = s[(*i)++];
  uint32_t cp;
  int need, k;
  uint8_t lo = 0x80, hi = 0xbf;
  if (b < 0x80u) return b;
  if (b >= 0xc2u && b <= 0xdfu) { need = 1; cp = b & 0x1fu; }
  else if (b >= 0xe0u && b <= 0xefu) {
    need = 2; cp = b & 0x0fu;
    if (b == 0xe0u) lo = 0xa0; else if (b == 0xedu) hi = 0x9f;
  } else if (b >= 0xf0u && b <= 0xf4u) {
    need = 3; cp = b & 0x07u;
    if (b == 0xf0u) lo = 0x90; else if (b == 0xf4u) hi = 0x8f;
  } else {
    return 0xfffdu;
  }
  for (k = 0; k < need; k++) {
    uint8_t c;
    if (*i >= len) return 0xfffdu;
    c = s[*i];
    if (c < lo || c > hi) return 0xfffdu;
    lo = 0x80; hi = 0xbf;
    cp = (cp << 6) | (c & 0x3fu);
    (*i)++;
  }
  return cp;
}

/* The normalised image of cp: 0 = itself, 1 = deleted, 2 = replaced by bytes [*b, *b + *blen). */
static int normalize_cp(uint32_t cp, const uint8_t **b, int *blen) {
  int lo = 0, hi = EMBBERT_NORM_MAPS - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    if (embbert_norm_cp[mid] == cp) {
      *b = embbert_norm_bytes + embbert_norm_offsets[mid];
      *blen = (int)(embbert_norm_offsets[mid + 1] - embbert_norm_offsets[mid]);
      return *blen == 0 ? 1 : 2;
    }
    if (embbert_norm_cp[mid] < cp) lo = mid + 1; else hi = mid - 1;
  }
  lo = 0; hi = EMBBERT_NORM_DELETED - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    if (cp < embbert_norm_deleted[2 * mid]) hi = mid - 1;
    else if (cp > embbert_norm_deleted[2 * mid + 1]) lo = mid + 1;
    else return 1;
  }
  return 0;
}

int embbert_tokenize(const char *text, size_t len, int32_t *ids) {
  const uint8_t *s = (const uint8_t *)text;
  static const uint8_t boundary = ' '; /* U+2581 */
  tok_state_t st;
  size_t i = 0;
  int have_text = 0, space_pending = 0, pending = 0;
  st.ids = ids; st.n = 0; st.word_syms = 0; st.word_len = 0; st.full = 0;
  if (EMBBERT_ADD_CLS) ids[st.n++] = EMBBERT_CLS_ID;
  while (i < len && !st.full) {
    uint32_t cp = utf8_next(s, len, &i);
    uint8_t one[4];
    const uint8_t *b = one;
    int blen = 0, kind = normalize_cp(cp, &b, &blen), k = 0;
    if (kind == 1) continue;
    if (kind == 0) { blen = utf8_encode(cp, one); b = one; }
    while (k < blen) { /* each character of the image */
      int clen = b[k] < 0x80u ? 1 : b[k] < 0xe0u ? 2 : b[k] < 0xf0u ? 3 : 4;
      if (b[k] == ' ') {
        if (have_text) space_pending = 1;
      } else { /* word boundaries wait for the next character: sentencepiece drops trailing U+2581s */
        pending += !have_text || space_pending;
        have_text = 1; space_pending = 0;
        if (clen == 3 && b[k] == 0xe2u && b[k + 1] == 0x96u && b[k + 2] == 0x81u) { /* a literal U+2581 */
          pending++;
        } else {
          for (; pending > 0; pending--) { flush_word(&st); add_symbol(&st, &boundary, 1); }
          add_symbol(&st, b + k, clen);
        }
      }
      k += clen;
    }
  }
  flush_word(&st);
  return st.n;
}
