"""Phrase tables for the synthetic phantom reports, written for this project.

Each entry is a tuple of interchangeable variants; `pipelines.phantoms.reports` picks one with the study's
own RNG, so the same seed gives the same wording. Placeholders are filled with `str.format`:
`{side}` ("right" / "left"), `{Side}` (capitalised), `{size}` / `{Size}` ("small", "moderate",
"large"), `{zone}` ("upper" / "mid" / "lower"), `{lobe}` / `{Lobe}` (e.g. "right lower lobe",
"lingula"), `{cm}` (a diameter such as "1.4").

Nothing here is copied from any report collection; sides are always the patient's.
"""

from __future__ import annotations

# --- normal statements (used when the matching finding is absent) ---------------------------------

HEART_NORMAL = (
    "The heart size is normal.",
    "Cardiac silhouette is within normal limits.",
    "Normal heart size.",
    "The cardiac silhouette is not enlarged.",
)
MEDIASTINUM_NORMAL = (
    "The mediastinal contours are unremarkable.",
    "Mediastinal and hilar contours are normal.",
    "Normal mediastinal silhouette.",
)
LUNGS_CLEAR = (
    "The lungs are clear.",
    "Lungs are clear bilaterally without focal consolidation.",
    "No focal airspace opacity.",
    "The lungs are well expanded and clear.",
)
NO_CONSOLIDATION = (
    "No focal consolidation.",
    "No focal airspace consolidation.",
)
NO_EDEMA = (
    "No pulmonary edema.",
    "No evidence of pulmonary vascular congestion.",
)
NO_EFFUSION_NO_PNEUMOTHORAX = (
    "No pleural effusion or pneumothorax.",
    "There is no pleural effusion or pneumothorax.",
    "No pneumothorax or pleural effusion is seen.",
)
NO_EFFUSION = (
    "No pleural effusion.",
    "There is no pleural effusion.",
)
NO_PNEUMOTHORAX = (
    "No pneumothorax.",
    "There is no pneumothorax.",
)
BONES_NORMAL = (
    "No acute osseous abnormality.",
    "The visualized osseous structures are intact.",
    "Osseous structures are unremarkable.",
)

# --- positive statements (FINDINGS section) --------------------------------------------------------

CARDIOMEGALY = {
    "mild": (
        "The heart is mildly enlarged.",
        "Mild cardiomegaly.",
        "The cardiac silhouette is mildly enlarged.",
    ),
    "moderate": (
        "The heart is moderately enlarged.",
        "Moderate cardiomegaly.",
        "The cardiac silhouette is moderately enlarged.",
    ),
}
EFFUSION = (
    "{Size} {side} pleural effusion.",
    "There is a {size} {side} pleural effusion.",
    "{Size} {side} pleural effusion blunting the costophrenic angle.",
)
EFFUSION_BILATERAL = (
    "{Size} bilateral pleural effusions.",
    "There are {size} bilateral pleural effusions.",
)
PNEUMOTHORAX = (
    "{Size} {side} pneumothorax with a visible visceral pleural line.",
    "There is a {size} {side} apical and lateral pneumothorax.",
    "{Size} {side} pneumothorax.",
)
NODULE = (
    "{cm} cm rounded nodule in the {side} {zone} lung zone.",
    "There is a {cm} cm nodular opacity projecting over the {side} {zone} lung.",
    "A {cm} cm {side} {zone} zone pulmonary nodule is noted.",
)
MASS = (
    "{cm} cm mass in the {side} {zone} lung zone.",
    "There is a {cm} cm rounded mass projecting over the {side} {zone} lung.",
    "Large {cm} cm {side} {zone} zone pulmonary mass.",
)
CONSOLIDATION = (
    "{Lobe} consolidation.",
    "Patchy airspace consolidation in the {lobe}.",
    "There is focal consolidation in the {lobe}.",
)
ATELECTASIS = (
    "Linear opacity at the {side} lung base with mild volume loss, consistent with atelectasis.",
    "{Side} basilar band-like atelectasis with slight elevation of the {side} hemidiaphragm.",
    "Plate-like atelectasis at the {side} base.",
)
ATELECTASIS_UPPER = (
    "Band-like opacity in the {side} upper zone with volume loss, consistent with atelectasis.",
    "{Side} upper zone linear atelectasis.",
)
ATELECTASIS_BILATERAL = (
    "Bibasilar linear atelectasis.",
    "Band-like opacities at both lung bases, consistent with atelectasis.",
)
EDEMA = {
    "mild": (
        "Mild perihilar haziness and vascular indistinctness, consistent with mild pulmonary edema.",
        "Mild interstitial pulmonary edema.",
    ),
    "moderate": (
        "Bilateral perihilar airspace opacities, consistent with moderate pulmonary edema.",
        "Moderate pulmonary edema with perihilar haziness.",
    ),
}
DEVICES = {
    "endotracheal_tube": (
        "Endotracheal tube terminates approximately 4 cm above the carina.",
        "The endotracheal tube tip is in satisfactory position above the carina.",
    ),
    "central_line": (
        "Right-sided central venous catheter with tip in the superior vena cava.",
        "A right central line terminates in the lower superior vena cava.",
    ),
    "pacemaker": (
        "Left chest wall pacemaker with leads in the right atrium and right ventricle.",
        "Left-sided dual-lead cardiac pacemaker in place.",
    ),
}

# --- IMPRESSION --------------------------------------------------------------------------------------

IMPRESSION_NORMAL = (
    "No acute cardiopulmonary abnormality.",
    "No acute cardiopulmonary abnormality.",
    "No acute cardiopulmonary process.",
)
IMPRESSION = {
    "pneumothorax": ("{Size} {side} pneumothorax.",),
    "pleural_effusion": ("{Size} {side} pleural effusion.",),
    "pleural_effusion_bilateral": ("{Size} bilateral pleural effusions.",),
    "consolidation": ("{Lobe} consolidation.", "Consolidation in the {lobe}."),
    "edema": ("Pulmonary edema.", "Findings consistent with pulmonary edema."),
    "cardiomegaly": ("Cardiomegaly.", "Enlarged cardiac silhouette."),
    "nodule": (
        "{cm} cm {side} {zone} zone pulmonary nodule; CT recommended for further evaluation.",
        "{Side} {zone} zone nodule, recommend chest CT.",
    ),
    "mass": ("{cm} cm {side} {zone} zone lung mass; CT recommended.",),
    "atelectasis": ("{Side} basilar atelectasis.",),
    "atelectasis_upper": ("{Side} upper zone atelectasis.",),
    "atelectasis_bilateral": ("Bibasilar atelectasis.",),
    "support_devices": ("Support devices as described.", "Lines and tubes as above."),
}

# --- INDICATION (deliberately independent of the findings, so it gives the model no hint) -------

INDICATIONS = (
    "Cough.",
    "Shortness of breath.",
    "Chest pain.",
    "Preoperative evaluation.",
    "Fever.",
    "Follow-up.",
    "Dyspnea on exertion.",
    "Routine screening.",
    "Fatigue and cough for two weeks.",
    "Evaluate for acute process.",
)
