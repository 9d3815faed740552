"""Serving: the FastAPI inference service and its inputs (uploads, DICOM, PACS, FHIR)."""
