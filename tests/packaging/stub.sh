#!/bin/sh
# Test stand-in for systemctl, rc-update, rc-service and the package managers: records each
# call as one line ("systemctl restart k3rs.service") in $STUB_LOG and succeeds. Uses no
# other program, so it works with a PATH that has almost nothing on it.
echo "${0##*/} $*" >>"${STUB_LOG:?STUB_LOG is not set}"
