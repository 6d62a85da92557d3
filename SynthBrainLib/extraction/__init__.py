"""Brain extraction of whole-head scans: the brain mask that guides registration, the intensity fit
and the refusals when a patient's scan still has its skull, neck and bias field."""
