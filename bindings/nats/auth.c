/* uvp-nats: credentials and TLS onto nats.c's options, from the program's
 * fields or the environment (uvp_nats_options_auth). */
#include "nats-internal.h"

/* One field: the program's value, else its environment variable's; *name
 * says which the value came from (what an error names). */
static const char *pick(const char *v, const char *field, const char *env,
                        const char **name) {
  if (v != NULL && *v != '\0') {
    *name = field;
    return v;
  }
  v = getenv(env);
  *name = env;
  return v != NULL && *v != '\0' ? v : NULL;
}

/* A file nats.c reads only at the connect: looked at now, so that a path
 * mistyped is said before the connect, by its name. */
static int readable(const char *path) {
  return access(path, R_OK) == 0 ? 0 : uv_translate_sys_error(errno);
}

/* A nkey seed file as `nk -gen user -pubout` writes it: the seed, then
 * the public key (nats.c wants both; it cannot derive the key). */
static int nkey_from_file(natsOptions *no, const char *path) {
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return uv_translate_sys_error(errno);
  char line[256], pub[57] = ""; /* a public key: U and 55 more */
  while (fgets(line, sizeof(line), f) != NULL) {
    line[strcspn(line, "\r\n \t")] = '\0';
    if (line[0] == 'U' && strlen(line) == 56)
      memcpy(pub, line, sizeof(pub)); /* its NUL included */
  }
  fclose(f);
  if (pub[0] == '\0')
    return UV_EINVAL;
  return uvp_nats_code(natsOptions_SetNKeyFromSeed(no, pub, path));
}

int uvp_nats_options_auth(natsOptions *no, const uvp_nats_auth_t *auth,
                          const char **what) {
  static const uvp_nats_auth_t none;
  const uvp_nats_auth_t *a = auth != NULL ? auth : &none;
  const char *n_user, *n_pw, *n_token, *n_creds, *n_nkey, *n_ca, *n_cert,
      *n_key, *n_name, *w = NULL;
  const char *user = pick(a->user, "user", "NATS_USER", &n_user);
  const char *pw = pick(a->password, "password", "NATS_PASSWORD", &n_pw);
  const char *token = pick(a->token, "token", "NATS_TOKEN", &n_token);
  const char *creds = pick(a->creds, "creds", "NATS_CREDS", &n_creds);
  const char *nkey = pick(a->nkey, "nkey", "NATS_NKEY", &n_nkey);
  const char *ca = pick(a->ca, "ca", "NATS_CA", &n_ca);
  const char *cert = pick(a->cert, "cert", "NATS_CERT", &n_cert);
  const char *key = pick(a->key, "key", "NATS_KEY", &n_key);
  const char *name = pick(a->tls_name, "tls_name", "NATS_TLS_NAME", &n_name);
  int rc = no == NULL ? UV_EINVAL : 0;
  if (rc == 0 && user != NULL) {
    w = n_user;
    rc = uvp_nats_code(natsOptions_SetUserInfo(no, user, pw));
  }
  if (rc == 0 && token != NULL) {
    w = n_token;
    rc = uvp_nats_code(natsOptions_SetToken(no, token));
  }
  if (rc == 0 && creds != NULL) {
    w = n_creds;
    rc = readable(creds);
    if (rc == 0)
      rc = uvp_nats_code(
          natsOptions_SetUserCredentialsFromFiles(no, creds, NULL));
  }
  if (rc == 0 && nkey != NULL) {
    w = n_nkey;
    rc = nkey_from_file(no, nkey);
  }
  if (rc == 0 && (ca != NULL || cert != NULL || key != NULL || name != NULL)) {
    w = ca != NULL     ? n_ca
        : cert != NULL ? n_cert
        : key != NULL  ? n_key
                       : n_name;
    rc = uvp_nats_code(natsOptions_SetSecure(no, true));
  }
  if (rc == 0 && ca != NULL) {
    w = n_ca;
    rc = uvp_nats_code(natsOptions_LoadCATrustedCertificates(no, ca));
  }
  if (rc == 0 && (cert != NULL || key != NULL)) {
    w = cert == NULL ? n_cert : key == NULL ? n_key : n_cert; /* missing */
    if (cert == NULL || key == NULL)
      rc = UV_EINVAL;
    else
      rc = uvp_nats_code(natsOptions_LoadCertificatesChain(no, cert, key));
  }
  if (rc == 0 && name != NULL) {
    w = n_name;
    rc = uvp_nats_code(natsOptions_SetExpectedHostname(no, name));
  }
  if (what != NULL)
    *what = rc != 0 ? w : NULL;
  return rc;
}
