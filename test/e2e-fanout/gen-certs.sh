#!/bin/sh
# Certificates for the TLS end-to-end tests, made fresh in DIR with the
# openssl tool:
#   ca.pem            a test CA (trusted only through --cacert)
#   good.pem/.key     127.0.0.1 and localhost, signed by the CA, valid now
#   expired.pem/.key  the same names, signed by the CA, expired in 2021
#   other.pem/.key    signed by the CA, valid now, for other.invalid only
#   client.pem/.key   a client's (extendedKeyUsage clientAuth), signed by
#                     the CA, valid now: mutual TLS
# Usage: gen-certs.sh DIR
set -eu
dir=$1
cd "$dir"
ossl() { openssl "$@" 2>/dev/null; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem -days 2 \
  -subj "/CN=uvp e2e test CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign"
# `openssl ca` is the tool's way to give a certificate dates in the past.
mkdir -p db
: > db/index.txt
echo 1000 > db/serial
cat > ca.cnf <<CNF
[ca]
default_ca = test
[test]
database = db/index.txt
serial = db/serial
new_certs_dir = db
certificate = ca.pem
private_key = ca.key
default_md = sha256
policy = any
copy_extensions = copy
unique_subject = no
[any]
commonName = supplied
CNF
leaf() { # NAME SAN [STARTDATE ENDDATE]; its extendedKeyUsage $eku
  ossl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$1.key" -out "$1.csr" \
    -subj "/CN=$1" -addext "subjectAltName=$2" \
    -addext "extendedKeyUsage=$eku"
  if [ $# -gt 2 ]; then
    ossl ca -batch -config ca.cnf -in "$1.csr" -out "$1.pem" -notext \
      -startdate "$3" -enddate "$4"
  else
    ossl ca -batch -config ca.cnf -in "$1.csr" -out "$1.pem" -notext -days 2
  fi
}
eku=serverAuth
leaf good "IP:127.0.0.1,DNS:localhost"
leaf expired "IP:127.0.0.1,DNS:localhost" 20200101000000Z 20210101000000Z
leaf other "DNS:other.invalid"
eku=clientAuth
leaf client "DNS:client.invalid"
chmod 644 ./*.pem ./*.key
