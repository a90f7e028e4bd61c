"""Traffic mirroring and replay (issue #19): kernel capture rules at the director
(:mod:`.rules`), the recorder in the mirror namespace (:mod:`.recorder`, reassembly in
:mod:`.reassembly`), the recording format (:mod:`.recording`) and replay to a target
(:mod:`.replay`). See docs/mirror.md."""
