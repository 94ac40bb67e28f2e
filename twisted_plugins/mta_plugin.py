"""twistd plugin for mta: ``twistd -n mta -c CONFDIR`` (kept light; see mta.tap)."""

from twisted.application.service import ServiceMaker

mta = ServiceMaker("mta", "mta.tap", "A mail transfer agent configured like Postfix", "mta")
