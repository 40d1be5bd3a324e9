#!/usr/bin/env bash
# Makes the certificates of the 3-node cluster of config/cluster/ with the
# drover binary itself (no openssl): a CA, node certificates for nodes 1-3 of
# cluster "drover-local" valid for 127.0.0.1, and a client certificate for
# the CLI, all in config/cluster/tls/. Run it from the repository root:
#
#   bash config/cluster/make-certs.sh [path/to/drover]
#
# Running it again keeps the CA and renews the node and client certificates.
set -euo pipefail
DROVER=${1:-target/release/drover}
DIR=config/cluster/tls
mkdir -p "$DIR"
if [[ ! -f $DIR/ca.pem ]]; then
  "$DROVER" tls ca create --out-dir "$DIR"
fi
for id in 1 2 3; do
  "$DROVER" tls cert create --ca-dir "$DIR" --node "$id" --cluster drover-local \
    --ip 127.0.0.1 --dns localhost --out-dir "$DIR"
done
"$DROVER" tls cert create --ca-dir "$DIR" --client cli --out-dir "$DIR"
echo "for the CLI:"
echo "  export DROVER_CACERT=$DIR/ca.pem DROVER_CLIENT_CERT=$DIR/client-cli.pem DROVER_CLIENT_KEY=$DIR/client-cli-key.pem"
