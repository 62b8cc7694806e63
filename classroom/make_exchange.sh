#!/bin/sh
# Create nbgrader's exchange folder: everyone may create entries, only owners may remove them.
#   sudo classroom/make_exchange.sh                 # /srv/nbgrader/exchange
#   sudo classroom/make_exchange.sh /some/where     # another place (then set NBGRADER_EXCHANGE)
set -eu
EXCHANGE="${1:-${NBGRADER_EXCHANGE:-/srv/nbgrader/exchange}}"
case "$EXCHANGE" in /*) ;; *) echo "make_exchange.sh: give an absolute path, not '$EXCHANGE'." >&2; exit 2;; esac
# Every existing folder above it must be searchable by the students' accounts (checked first,
# so nothing is created when it would not work).
dir=$(dirname "$EXCHANGE")
while [ "$dir" != "/" ]; do
  if [ -d "$dir" ]; then
    case "$(stat -c %A "$dir" | cut -c10)" in
      x|t) ;;
      *) echo "make_exchange.sh: $dir is not searchable by other users, so students could not reach $EXCHANGE." >&2
         echo "  Fix: chmod o+x $dir, or choose an exchange under /srv. Nothing was created." >&2
         exit 1;;
    esac
  fi
  dir=$(dirname "$dir")
done
mkdir -p "$EXCHANGE"
chmod 1777 "$EXCHANGE"   # rwx for everyone + the sticky bit, like /tmp
echo "exchange ready: $EXCHANGE ($(stat -c %A "$EXCHANGE"))"
