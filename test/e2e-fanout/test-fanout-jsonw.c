/* The tools' JSON writer (examples/common/jsonw.h) against jansson,
 * whose bytes it must reproduce: uvp-fanout's rows of --json, its
 * coordinator's request bodies and uvp-gateway's summaries were jansson's
 * dumps, and programs read them.  Strings with every escape and UTF-8's
 * edge cases (overlong forms, surrogates, past U+10FFFF, cut sequences),
 * integers at their limits, reals in every range jansson's %.15g and its
 * exponent cleanup touch, then 200 000 random objects of each; objects
 * and arrays nested as the gateway's summary nests them; tenths as the
 * gateway writes its milliseconds. */
#include <jansson.h>
#include <math.h>
#include <stdint.h>

#include "../helpers.h"

#include "jsonw.h"

/* One object {"s":S,"i":I,"d":D,"b":true,"z":null} both ways: the same
 * bytes, and S refused by both or by neither. */
static void same(const char *s, int64_t i, double d) {
  json_t *o = json_object();
  json_t *js = json_string(s);
  json_object_set_new(o, "i", json_integer(i));
  if (js != NULL)
    json_object_set_new(o, "s", js);
  json_object_set_new(o, "d", json_real(d));
  json_object_set_new(o, "b", json_true());
  json_object_set_new(o, "z", json_null());
  char *ref = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(15));
  jsonw_t w = {0};
  jsonw_open(&w);
  jsonw_key(&w, "i");
  jsonw_int(&w, i);
  size_t before = w.len;
  bool first = w.first;
  jsonw_key(&w, "s");
  bool ok = jsonw_str(&w, s);
  if (!ok) {
    w.len = before;
    w.first = first;
  }
  jsonw_key(&w, "d");
  jsonw_real(&w, d);
  jsonw_key(&w, "b");
  jsonw_bool(&w, true);
  jsonw_key(&w, "z");
  jsonw_null(&w);
  jsonw_close(&w);
  assert_int_equal(ok, js != NULL);
  assert_false(w.failed);
  w.p[w.len] = '\0';
  assert_string_equal(w.p, ref);
  free(ref);
  free(w.p);
  json_decref(o);
}

static void test_edges(void **state) {
  (void)state;
  static const char *const strs[] = {"",
                                     "plain",
                                     "q\"uote",
                                     "back\\slash",
                                     "\b\f\n\r\t",
                                     "\x01\x1f\x7f",
                                     "/slash",
                                     "caf\xc3\xa9",
                                     "\xe2\x82\xac",
                                     "\xf0\x9f\x98\x80",
                                     "\xc0\x80",         /* overlong NUL */
                                     "\xe0\x80\xaf",     /* overlong '/' */
                                     "\xed\xa0\x80",     /* a surrogate */
                                     "\xf4\x90\x80\x80", /* past U+10FFFF */
                                     "\xf5\x80\x80\x80", /* no such lead byte */
                                     "\xe2\x82",         /* cut short */
                                     "\x80", /* a continuation alone */
                                     "a\xc3\xa9\x01z"};
  static const int64_t ints[] = {0, 1, -1, INT64_MAX, INT64_MIN, 1000000007};
  static const double reals[] = {
      0.0,  -0.0,    1.0,      0.1,   1e15,    1e16,    1e21,        1e-5,
      1e-7, 123.456, 2.5e-300, 1e300, 3.0 / 7, -42.125, 4294967296.0};
  for (size_t a = 0; a < sizeof(strs) / sizeof(*strs); a++)
    for (size_t b = 0; b < sizeof(ints) / sizeof(*ints); b++)
      for (size_t c = 0; c < sizeof(reals) / sizeof(*reals); c++)
        same(strs[a], ints[b], reals[c]);
}

static void test_random(void **state) {
  (void)state;
  uint64_t x = 0x9E3779B97F4A7C15ull;
  for (int it = 0; it < 200000; it++) {
    char s[16];
    size_t n = 0;
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    int len = (int)(x >> 60) % 12;
    for (int i = 0; i < len; i++) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      char c = (char)(x >> 56);
      if (it % 3 == 0)
        c &= 0x7f;
      if (c != '\0')
        s[n++] = c;
    }
    s[n] = '\0';
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    double d = ldexp((double)(x >> 11), (int)(x % 200) - 120);
    same(s, (int64_t)x, it % 2 ? d : -d / 3);
  }
}

/* {"a":[],"b":[{"x":1},{"y":[2,{}]}],"c":{"d":{}},"e":3}: commas where
 * members and items follow one another, none after an opening. */
static void test_nested(void **state) {
  (void)state;
  json_t *ref = json_pack("{s:[],s:[{s:i},{s:[i,{}]}],s:{s:{}},s:i}", "a", "b",
                          "x", 1, "y", 2, "c", "d", "e", 3);
  char *want = json_dumps(ref, JSON_COMPACT | JSON_REAL_PRECISION(15));
  jsonw_t w = {0};
  jsonw_open(&w);
  jsonw_key(&w, "a");
  jsonw_nest(&w, '[');
  jsonw_unnest(&w, ']');
  jsonw_key(&w, "b");
  jsonw_nest(&w, '[');
  jsonw_item(&w);
  jsonw_nest(&w, '{');
  jsonw_key(&w, "x");
  jsonw_int(&w, 1);
  jsonw_unnest(&w, '}');
  jsonw_item(&w);
  jsonw_nest(&w, '{');
  jsonw_key(&w, "y");
  jsonw_nest(&w, '[');
  jsonw_item(&w);
  jsonw_int(&w, 2);
  jsonw_item(&w);
  jsonw_nest(&w, '{');
  jsonw_unnest(&w, '}');
  jsonw_unnest(&w, ']');
  jsonw_unnest(&w, '}');
  jsonw_unnest(&w, ']');
  jsonw_key(&w, "c");
  jsonw_nest(&w, '{');
  jsonw_key(&w, "d");
  jsonw_nest(&w, '{');
  jsonw_unnest(&w, '}');
  jsonw_unnest(&w, '}');
  jsonw_key(&w, "e");
  jsonw_int(&w, 3);
  jsonw_close(&w);
  assert_false(w.failed);
  assert_string_equal(w.p, want);
  free(w.p);
  free(want);
  json_decref(ref);
}

/* jsonw_tenths(t) is jansson's json_real(t / 10.0): every t to 10^6, the
 * powers of ten and their neighbours, both sides of 10^14 (where it hands
 * over to jsonw_real), and 200 000 random t below 2^63. */
static void tenths_same(uint64_t t) {
  json_t *r = json_real((double)t / 10.0);
  char *want = json_dumps(r, JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
  jsonw_t w = {0};
  jsonw_tenths(&w, t);
  assert_false(w.failed);
  if (strcmp(w.p, want) != 0)
    fail_msg("tenths %llu: \"%s\", jansson \"%s\"", (unsigned long long)t, w.p,
             want);
  free(w.p);
  free(want);
  json_decref(r);
}

static void test_tenths(void **state) {
  (void)state;
  for (uint64_t t = 0; t <= 1000000; t++)
    tenths_same(t);
  for (uint64_t p = 10; p <= 1000000000000000000ull; p *= 10)
    for (uint64_t t = p - 2; t <= p + 2; t++)
      tenths_same(t);
  uint64_t x = 0x2545F4914F6CDD1Dull;
  for (int i = 0; i < 200000; i++) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    tenths_same((x >> 1) >> (x % 50));
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_edges), cmocka_unit_test(test_random),
      cmocka_unit_test(test_nested), cmocka_unit_test(test_tenths)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
