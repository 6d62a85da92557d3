"""The adversarial campaign against ``synthbrain`` and SynthBrainLib: the harness, the shared hostile
inputs (also used by Testing/test_security.py) and the case tables; run it with ``python
Testing/hostile/campaign.py`` (Testing/test_hostile.py runs its self-check and a fixed sample in CI)."""
