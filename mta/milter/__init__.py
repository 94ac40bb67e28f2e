"""Milter client: the Sendmail milter protocol (v6) spoken to external
filters (OpenDKIM, OpenDMARC, rspamd, ClamAV, mailfromd).  ``protocol`` is
the sans-I/O core, ``client`` its Twisted adapter, ``session`` the per-SMTP
session orchestration across ``smtpd_milters``."""
