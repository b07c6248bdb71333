"""Private data: finding it in text (:mod:`.pii`) and protecting it before it leaves a service (:mod:`.protect`)."""
