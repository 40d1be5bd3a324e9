#!/usr/bin/env bash
# Makes the certificates of the 3-node cluster of docker-compose.yml with the
# drover binary itself (no openssl): a CA, node certificates for nodes 1-3 of
# cluster "drover-compose" (valid for their service names node1..node3, for
# localhost and 127.0.0.1, where the ports are published), and a client
# certificate for the CLI, all in config/compose/tls/ (or DIR). Run it from
# the repository root, before `docker-compose up`:
#
#   bash config/compose/make-certs.sh [path/to/drover] [DIR] [CLUSTER]
#
# The agent in the image runs as user 65532: run as root, the node keys are
# given to that user (mode 0600 stays); otherwise they are shared with it
# through a POSIX ACL (setfacl). Running it again keeps the CA and renews the
# node and client certificates.
set -euo pipefail
DROVER=${1:-target/release/drover}
DIR=${2:-config/compose/tls}
CLUSTER=${3:-drover-compose}
AGENT_UID=65532
mkdir -p "$DIR"
# The directory is mounted into the containers: the agent must enter it.
chmod 755 "$DIR"
if [[ ! -f $DIR/ca.pem ]]; then
  "$DROVER" tls ca create --out-dir "$DIR"
fi
for id in 1 2 3; do
  "$DROVER" tls cert create --ca-dir "$DIR" --node "$id" --cluster "$CLUSTER" \
    --dns "node$id" --dns localhost --ip 127.0.0.1 --out-dir "$DIR"
  key="$DIR/node-$id-key.pem"
  if [[ $(id -u) == 0 ]]; then
    chown "$AGENT_UID" "$key"
  elif command -v setfacl >/dev/null; then
    setfacl -m "u:$AGENT_UID:r" "$key"
  else
    echo "make-certs: cannot give $key to user $AGENT_UID (run as root, or install setfacl)" >&2
    exit 1
  fi
done
"$DROVER" tls cert create --ca-dir "$DIR" --client cli --out-dir "$DIR"
echo "for the CLI:"
echo "  export DROVER_CACERT=$DIR/ca.pem DROVER_CLIENT_CERT=$DIR/client-cli.pem DROVER_CLIENT_KEY=$DIR/client-cli-key.pem"
