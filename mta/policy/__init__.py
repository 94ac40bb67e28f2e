"""Access policy: restriction lists evaluated at each SMTP stage."""
