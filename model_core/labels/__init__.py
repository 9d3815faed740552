"""Labels: the MeSH -> CheXpert table and the CheXpert-style report labeler.

    mesh.py        MESH_TO_CHEXPERT (the explicit table) and mesh_to_chexpert
    labeler.py     label_report / label_reports / text_mentions, over the stages
                   extract.py -> classify.py -> aggregate.py, whose phrases and trigger patterns are
                   the data files in phrases/ and patterns/ (read by phrase_files.py)
    agreement.py   labeler_agreement (report labeler vs MeSH labels) and write_label_table
"""

from model_core.labels.agreement import labeler_agreement, write_label_table
from model_core.labels.labeler import label_report, label_reports, text_mentions
from model_core.labels.mesh import MESH_TO_CHEXPERT, mesh_to_chexpert

__all__ = ["MESH_TO_CHEXPERT", "label_report", "label_reports", "labeler_agreement", "mesh_to_chexpert",
           "text_mentions", "write_label_table"]
