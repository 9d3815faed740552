"""Regulatory documentation: the 510(k) technical packet of one evaluated model version.

`build_packet(inputs, out_dir)` writes `<out_dir>/510k_packet_<model_name>_v<version>.zip` holding packet.json (the
packet's content, the single source the two renderings are made from), packet.html, packet.pdf, sbom.cdx.json (when
recorded at training), SHA256SUMS and SHA256SUMS.sig (Ed25519 over SHA256SUMS); `verify_packet(zip_path)` re-hashes
and checks the signature. `assemble.build_run_packet` gathers the inputs of one pipeline run.

Beyond the 510(k)-style content: the honest pathway (De Novo for the generator; cleared triage devices as predicates
for the detection-head claims only), the PCCP with a computed "within the PCCP?" verdict per version, the comparison
with the current champion's packet, the SBOM of the training environment with the licences that need attention, an
eSTAR-style section manifest and the GMLP principles mapped to their evidence.

What the packet does and does not do
  * It RECEIVES the evaluation metrics (`model_core.evaluation.evaluate_model`), the release-gate decision, the
    data summary and the software provenance recorded with the model at training time; it computes no metric
    and never samples the environment it is built in. Risk levels are read off the gate's own checks.
  * No PHI: only known fields are copied out of the inputs (whitelist), numbers are type-checked, free text is
    screened with `model_core.phi` for report text and identifiers, and formatted values (K-numbers, hashes,
    timestamps, versions) must match their own formats. Report text, predictions and pixel data under any key
    are never rendered.
  * Reproducible: the creation timestamp is an input, every mapping is rendered in a fixed order, the PDF is
    built with reportlab's `invariant=1` and the zip with fixed member dates, so the same inputs give
    byte-identical files (and the same SHA256SUMS).

Modules, in the order a packet is made: labeling (fixed text, outline) → inputs (PacketInputs, predicates, readers)
→ evidence (run files: model hashes, test-set separation) → sections (performance, gate, data, versions,
monitoring), risk, pathway (predicates, eSTAR, GMLP), pccp, champion, licences (SBOM) → document (the packet's
content) → view, view_evidence (blocks both renderings draw) → render_html, render_pdf → archive (zip, SHA256SUMS,
signature, verification).
"""

from regulatory.archive import PacketVerificationError, build_packet, read_packet_document, verify_packet
from regulatory.document import packet_document
from regulatory.inputs import PacketInputs, load_predicates
from regulatory.pccp import pccp_verdict

__all__ = [
    "PacketInputs",
    "PacketVerificationError",
    "build_packet",
    "load_predicates",
    "packet_document",
    "pccp_verdict",
    "read_packet_document",
    "verify_packet",
]
