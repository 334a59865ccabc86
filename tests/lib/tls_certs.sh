#!/bin/sh
# tls_certs.sh DIR - make the certificates the TLS tests use, with the
# openssl command, into DIR (created). Everything is made fresh each run;
# nothing secret is checked in.
#
#   ca.pem ca.key           a test CA (CN "ringmail test CA")
#   server.pem server.key   signed by the CA for mx.ringmail.test,
#                           localhost and IP 127.0.0.1 (chain: server then CA)
#   wrong.pem wrong.key     signed by the CA for other.invalid only
#   self.pem self.key       self-signed for mx.ringmail.test
#   cnonly.pem cnonly.key   signed by the CA, CN mx.ringmail.test, no SAN
#                           (must not verify: no CN fallback, TLS-02)
#   expired.pem expired.key signed by the CA for mx.ringmail.test, expired
#
# Keys are EC P-256 (fast handshakes). Exit non-zero with one line on error.
set -eu
dir=${1:?usage: tls_certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
days=30
ossl() { openssl "$@" 2>/dev/null || { echo "tls_certs.sh: openssl $1 failed" >&2; exit 1; }; }
key() { ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }

key ca.key
ossl req -x509 -new -key ca.key -sha256 -days $days -subj "/CN=ringmail test CA" \
	-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
	-out ca.pem

leaf() { # name cn san [x509 options...]
	name=$1 cn=$2 san=$3
	shift 3
	key "$name.key"
	ossl req -new -key "$name.key" -subj "/CN=$cn" -out "$name.csr"
	: >"$name.ext"
	[ -n "$san" ] && printf 'subjectAltName=%s\n' "$san" >>"$name.ext"
	printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' >>"$name.ext"
	ossl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 \
		-extfile "$name.ext" -out "$name.crt" "$@"
	cat "$name.crt" ca.pem >"$name.pem"
	rm -f "$name.csr" "$name.ext" "$name.crt"
}
leaf server mx.ringmail.test "DNS:mx.ringmail.test,DNS:localhost,IP:127.0.0.1" -days $days
leaf wrong other.invalid "DNS:other.invalid" -days $days
leaf cnonly mx.ringmail.test "" -days $days
# Expired: valid from 2020-01-01 to 2020-01-02. "x509 -req" in OpenSSL 3.0
# takes no start date, so this one is signed with "openssl ca".
key expired.key
ossl req -new -key expired.key -subj "/CN=mx.ringmail.test" -out expired.csr
mkdir -p ca.db
: >ca.db/index.txt
echo 1000 >ca.db/serial
cat >ca.db/ca.cnf <<CNF
[ca]
default_ca = test
[test]
database = ca.db/index.txt
serial = ca.db/serial
new_certs_dir = ca.db
default_md = sha256
policy = any
copy_extensions = none
x509_extensions = leaf
[any]
commonName = supplied
[leaf]
subjectAltName = DNS:mx.ringmail.test,IP:127.0.0.1
basicConstraints = CA:FALSE
keyUsage = digitalSignature
extendedKeyUsage = serverAuth
CNF
ossl ca -batch -notext -config ca.db/ca.cnf -cert ca.pem -keyfile ca.key \
	-startdate 20200101000000Z -enddate 20200102000000Z -in expired.csr -out expired.crt
cat expired.crt ca.pem >expired.pem
rm -rf ca.db expired.csr expired.crt

key self.key
ossl req -x509 -new -key self.key -sha256 -days $days -subj "/CN=mx.ringmail.test" \
	-addext "subjectAltName=DNS:mx.ringmail.test,IP:127.0.0.1" -out self.pem
