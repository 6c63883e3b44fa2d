"""A rule-based chest radiograph report labeler for CheXpert's 14 observations.

Each observation that a report mentions is labelled ``positive``, ``negative`` or ``uncertain``
(with the side where the report states one); observations the report does not mention are left out.

How it works, sentence by sentence (NegEx-style):

1. The report is split into sentences, each sentence into clauses at conjunctions that end a
   negation's scope ("but", "however", "although", "and there is", ";" ...).
2. Mention phrases (the synonym table ``MENTION_PHRASES``, data in this module) are found; phrases
   that are other things (``pericardial effusion`` is not a pleural effusion) are masked first.
3. Each mention is labelled from cues in its own clause: uncertainty that wraps a negation
   ("cannot be excluded") first, then negation ("no", "without", "free of", "is not seen" ...),
   then uncertainty ("may", "possible", "versus", "borderline" ...); otherwise positive.
   Fixed phrases that state a normal result ("heart size is normal", "lungs are clear") give
   negative labels directly (``NORMAL_PHRASES``).
4. Mentions combine over the report: positive beats uncertain beats negative (CheXpert's rule).
   "No Finding" is positive when nothing but Support Devices is positive or uncertain and the
   report reads as normal (no other abnormality such as granuloma, emphysema or scoliosis is
   asserted). ``devices_block_no_finding=True`` also lets a device stop "No Finding" (the IU
   curators' convention, used by ``benchmarks/score_labeler.py``); the default keeps CheXpert's rule.

Choices worth knowing: a heart size "at the upper limits of normal" is a normal size (negative),
while "borderline" stays uncertain; "volume loss" is not atelectasis (it is often post-surgical) but
does stop "No Finding"; "to exclude"/"rule out" a finding negates it, "cannot exclude" does not.

Pure Python and ``re`` only: importing this module is instant, and it never imports torch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
"""CheXpert's 14 observations, in CheXpert's order."""

POSITIVE, NEGATIVE, UNCERTAIN = "positive", "negative", "uncertain"
VALUES: tuple[str, ...] = (POSITIVE, NEGATIVE, UNCERTAIN)

# Internal pseudo-observation: abnormalities outside the 14 (granuloma, emphysema, scoliosis ...).
# It is never output; an asserted one stops "No Finding" from being positive.
_OTHER = "_other abnormality"

# ---------------------------------------------------------------------------------------------
# Data: phrases. Regular expressions over lower-cased text; word boundaries are added around each.
# ---------------------------------------------------------------------------------------------

_W = r"(?:[\w\-/]+[,]?\s+)"  # one word (and the space after it) inside a phrase gap

MENTION_PHRASES: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": (
        r"widen(?:ed|ing) (?:of (?:the )?)?(?:superior )?mediastin\w*",
        r"mediastinal widening",
        r"(?:cardio)?mediastin\w* (?:silhouette |contours? |shadow )?(?:is |are |appears |remains )?"
        + _W
        + r"{0,2}(?:widened|enlarged|prominent)",
        r"enlarged (?:cardio)?mediastin\w*(?: silhouette)?",
        r"prominen(?:t|ce of the) (?:superior )?mediastin\w*",
        r"mediastinal (?:mass|lymphadenopathy|adenopathy)",
        r"hilar (?:lymphadenopathy|adenopathy)",
    ),
    "Cardiomegaly": (
        r"cardiomegaly",
        r"cardiac (?:enlargement|hypertrophy)",
        r"enlarge(?:d|ment of the) (?:heart|cardiac (?:silhouette|shadow|size))",
        r"(?:heart|cardiac silhouette|cardiac shadow|cardiac size|heart size|cardiac contour|"
        r"cardiomediastinal silhouette|cardiopericardial silhouette) (?:is |are |appears |remains |"
        r"which is |size is )?" + _W + r"{0,3}?(?:enlarged|large|increased|prominent)",
        r"(?:large|prominent|enlarged|increased) (?:heart|cardiac silhouette|cardiac shadow|heart size|"
        r"cardiac size|cardiomediastinal silhouette)",
        r"borderline (?:enlarged )?(?:heart|cardiac|cardiomegaly)(?: size| silhouette| enlargement)?",
    ),
    "Lung Opacity": (
        r"opaci(?:ty|ties|fication|fications|fied)",
        r"air[\- ]?space (?:disease|opaci\w*|process|filling)",
        r"infiltrat(?:e|es|ion|ive)",
        r"(?:lung|pulmonary|parenchymal|basilar|basal|base|retrocardiac|lobe|perihilar|airspace|patchy|"
        r"hazy|streaky|focal|interstitial|alveolar|ill-defined|linear|nodular|round|rounded|vague|"
        r"small|midlung|apical|lingular|hilar) densit(?:y|ies)",
        r"densit(?:y|ies) (?:in|within|at|of|projecting over|overlying) (?:the )?(?:left |right )?"
        r"(?:lung|lingula|base|bases|lobe|upper|lower|middle|mid|midlung|perihilar|hilum|retrocardiac|apex|apices)",
        r"haziness",
        r"ground[\- ]glass",
    ),
    "Lung Lesion": (
        r"nodules?",  # not "nodular": "nodular density" is an opacity (the IU curators agree)
        r"mass(?:es)?",
        r"(?:lung|pulmonary|cavitary|cavitating|parenchymal) lesions?",
        r"lesions? (?:in|of|within) (?:the )?(?:left |right )?(?:lung|lobe|upper|lower|middle|apex)",
        r"tumou?rs?",
        r"neoplasms?",
        r"carcinoma",
        r"malignan\w+",
        r"metasta\w+",
        r"cavit(?:y|ies|ation|ary)",
    ),
    "Edema": (
        r"(?:pulmonary |interstitial |alveolar |airspace )?oedema",
        r"edema",
        r"(?:pulmonary |pulmonary vascular |vascular |venous )congestion",
        r"(?:mild|minimal|moderate|slight) congestion",
        r"congestive (?:heart )?failure",
        r"chf",
        r"cephalization",
        r"kerley",
        r"fluid overload",
        r"volume overload",
    ),
    "Consolidation": (r"consolidat\w*",),
    "Pneumonia": (
        r"(?:broncho)?pneumonias?",
        r"pneumonitis",
        r"infections?",
        r"infectious (?:process|infiltrates?|etiology)",
        r"infectious",
    ),
    "Atelectasis": (
        r"atelecta\w*",
        r"(?:lobar |lobe |segmental )?collapse(?:d)?",
    ),
    "Pneumothorax": (
        r"pneumothora(?:x|ces|xes)",
        r"(?:hydro|hemo)pneumothora(?:x|ces)",
    ),
    "Pleural Effusion": (
        r"effusions?",
        r"pleural fluid",
        r"fluid (?:in|within|tracking along) (?:the )?(?:major |minor )?(?:fissures?|pleural space)",
        r"hydrothorax",
        r"blunt(?:ed|ing) (?:of )?(?:the )?(?:left |right |bilateral |both |posterior |lateral )*"
        r"(?:costophrenic|cp|costodiaphragmatic)",
        r"(?:costophrenic|cp) " + _W + r"{0,1}blunt\w*",
        r"(?:costophrenic|cp) (?:angles?|recess(?:es)?|sulci|sulcus) (?:is |are |appears? |remains? )?"
        + _W
        + r"{0,2}?blunt\w*",
    ),
    "Pleural Other": (
        r"pleural (?:thickening|scarring|plaques?|calcifications?)",
        r"fibrothorax",
        r"pleural[\- ]parenchymal (?:scarring|thickening)",
        r"apical (?:pleural )?(?:cap|capping)",
    ),
    "Fracture": (
        r"fractures?",
        r"fractured",
        r"compression (?:deformit\w+|fractures?)",
        r"fx",
    ),
    "Support Devices": (
        r"pacemakers?",
        r"pacer",
        r"(?:aicd|icd|defibrillator)",
        r"(?:pacer|pacemaker|cardiac|transvenous|defibrillator) (?:leads?|wires?|generator|device)",
        r"(?:picc|central venous|central|venous|dialysis|swan[\- ]ganz|ij|jugular|subclavian|"
        r"port|catheter) (?:line|catheter)s?",
        r"catheters?",
        r"(?:port[\- ]?a[\- ]?cath|porta ?cath|power ?port|mediport|chest port|port)",
        r"(?:endotracheal|et|enteric|feeding|nasogastric|ng|og|orogastric|chest|tracheostomy|"
        r"nasoenteric|dobhoff|gastric|thoracostomy) tubes?",
        r"tracheostomy",
        r"(?:surgical|cholecystectomy|vascular|metallic|metal) clips?",
        r"clips?",
        r"(?:sternotomy|sternal|cerclage) wires?",
        r"(?:median )?sternotomy",
        r"cabg",
        r"(?:valve )?prosthe\w+",
        r"(?:valve )?replacement",
        r"stents?",
        r"(?:orthopedic |surgical |fixation |spinal |fusion )?hardware",
        r"(?:fixation )?(?:screws|plates?|rods?)",
        r"drains?",
        r"sutures?",
        r"(?:loop )?recorder",
        r"(?:medical |implanted |cardiac )?devices?",
        r"(?:surgical )?staples",
        r"tips?",  # "... with tip at the cavoatrial junction": the device's name is often left out
        r"(?:monitor|ekg|ecg|cardiac monitor|electrocardiogram) leads?",
        r"leads",
        r"(?:gastrostomy|g-|j-|peg) tubes?",
        r"(?:vp |ventriculoperitoneal )?shunt(?: tubing)?",
        r"neurostimulator|stimulator",
        r"(?:internal )?fixation",
        r"generator",
        r"anchors?",
    ),
    _OTHER: (
        r"granulom\w*",
        r"calcifi\w+",
        r"calcinosis",
        r"scar(?:s|ring)?",
        r"fibros\w+|fibrotic",
        r"emphysema\w*",
        r"copd|chronic obstructive",
        r"hyperinfla\w+|hyperexpan\w+|hyperaera\w+|overinfla\w+|hyperlucen\w+",
        r"flatten(?:ed|ing) (?:of )?(?:the )?(?:hemi)?diaphragm\w*",
        r"(?:low|decreased|reduced|diminished) lung volumes?",
        r"lung volumes? (?:are |is |remain |appear )?(?:\w+ ){0,2}(?:low|decreased|reduced|diminished|small)"
        r"(?: side)?",
        r"(?:bronchovascular|vascular|central) crowding",
        r"(?:hypoinflat|hypoventilat)\w+",
        r"volume loss",  # a sign (often post-surgical), not atelectasis itself; it is not normal either
        r"degenerat\w+",
        r"spondylo\w+|osteophyt\w+|arthriti\w+|arthropath\w+|dish",
        r"(?:dextro|levo|rotary )?scolio\w+|kyphos\w+|kyphotic|lordo\w+",
        r"(?:dextro|levo)[\- ]?(?:curvature|convex\w*)",
        r"(?:spine|spinal|thoracic|rightward|leftward) curvature|curvature of (?:the )?(?:\w+ )?spine",
        r"(?:degenerative )?endplate (?:changes|depressions?|spurring|sclerosis)",
        r"(?:prominent |prominence of (?:the )?)?epicardial fat(?: pads?)?",
        r"(?:bi)?hilar (?:prominence|fullness)|prominen\w+ (?:of (?:the )?)?(?:bi)?hil(?:a|um|ar)\w*",
        r"prominen\w+ (?:of )?(?:the )?(?:central )?pulmonary arter\w+",
        r"breast (?:prosthes[ie]s|implants?)",
        r"tortu\w+|ectatic|ectasia|unfold\w+|aneurys\w+",
        r"atheroscl\w+|atherom\w+",
        r"hernia\w*",
        r"eventration",
        r"elevat(?:ed|ion) (?:of )?(?:the )?(?:left |right )?(?:hemi)?diaphragm\w*",
        r"(?:hemi)?diaphragm\w* (?:is |are |remains? )?" + _W + r"{0,2}?elevat\w+",
        r"bronchiectasis",
        r"(?:interstitial|bronchovascular|lung) markings? (?:are |is )?" + _W + r"{0,2}?"
        r"(?:prominen\w+|increased|coarse\w*|accentuat\w+)",
        r"(?:prominen\w+|increased|coarse\w*|accentuat\w+) (?:interstitial|bronchovascular|lung) markings?",
        r"(?:prominence|accentuation|coarsening) of (?:the )?(?:interstitial|bronchovascular|lung) markings?",
        r"chronic (?:lung|interstitial|changes)",
        r"deformit\w+",
        r"osteopeni\w+|osteopor\w+|demineraliz\w+",
        r"thickening",
        r"foreign bod\w+",
        r"(?:lymphadenopath|adenopath)\w*",
        r"cyst\w*",
        r"bulla\w*|bleb\w*",
        r"post[\- ]?surgical|postoperative|surgical changes",
        r"pneumonectomy|lobectomy|mastectomy",
        r"azygos (?:lobe|fissure)",
        r"pectus",
        r"(?:hyper|hypo)trophic|hypertrophy",
        r"(?:limited|suboptimal|technically limited|limited evaluation|poor inspiration|shallow inspiration)",
        r"(?:tiny |small |stable )?(?:focus|foci) of",
    ),
}
"""Mention phrases (regular expressions) per observation: the synonym table."""

# Phrases that look like a mention but are something else; masked before mentions are matched.
EXCLUDED_PHRASES: tuple[str, ...] = (
    r"pericardial effusions?",
    r"joint effusions?",
    r"(?:soft tissue|bone|breast|nipple|osseous|calcified|sclerotic) densit(?:y|ies)",
    r"(?:soft tissue|breast|nipple) (?:opacit(?:y|ies)|mass(?:es)?)",
    r"(?:cardiac|heart|mediastinal|hilar|aortic) (?:contours?|silhouettes?|borders?) (?:is |are )?"
    r"(?:normal|within normal limits|unremarkable)",
    r"(?:no|without) (?:significant |acute |interval )?(?:change|changes)",
    r"air[\- ]?fluid level",
    r"mass effect",
    r"(?:scapular|scapula|inferior|lingular|liver|splenic) tip",
    r"(?:thyroid|breast|soft tissue|neck|abdominal|nipple|axillary) mass(?:es)?",
    r"(?:cholecystectomy|abdominal) clips?",
    r"clips? (?:in|within|overlying|projecting over) (?:the )?(?:right |left )?upper (?:quadrant|abdomen)",
    r"(?:humer\w*|shoulder|hip|knee|joint) (?:prosthes\w*|implants?|replacement|arthroplasty)",
    r"(?:osseous|bony|bone|skeletal) metasta\w+",
    r"metasta\w+ (?:disease )?(?:to|of|in|within) (?:the )?(?:bones?|osseous|skeleton|spine|liver|brain)",
    r"body habitus",
)

# Fixed phrases that state a normal result. A subject made of these words, then a normal predicate,
# gives negative labels to the observations its words name (``_NORMAL_SUBJECT_OBSERVATIONS``).
_NORMAL_SUBJECT = (
    r"(?:(?:the|heart|cardiac|cardio|cardiomediastinal|cardiopericardial|mediastinal|mediastinum|"
    r"hilar|hila|hilum|silhouettes?|contours?|size|shadow|and|pulmonary|vascularity|vasculature|"
    r"vascular|markings|width|borders?|,)[ \t]*){1,9}"
)
_NORMAL_PREDICATE = (
    r"(?:is |are |appears? |remains? |otherwise |grossly |again |overall |both |also |all |size )*"
    r"(?:normal|within normal limits|unremarkable|not enlarged|not widened|"
    r"(?:of |in )?normal (?:size|limits|caliber|contours?|width)|normal in (?:size|contour|caliber))"
)
NORMAL_PHRASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (_NORMAL_SUBJECT + _NORMAL_PREDICATE, ()),  # observations from the subject's words
    (r"normal " + _NORMAL_SUBJECT, ()),
    (
        r"(?:lungs?|lung fields?|lung parenchyma|lungs bilaterally) (?:are |is |remain |appear |appears )?"
        r"(?:grossly |otherwise |now |both |again )?(?:clear|well[\- ]?aerated|"
        r"well[\- ]?expanded(?: and clear)?)",
        ("Lung Opacity", "Consolidation"),
    ),
    (r"clear lungs?", ("Lung Opacity", "Consolidation")),
    # "upper limits of normal" states a size inside the normal range: negative, unlike "borderline"
    (
        r"(?:heart|cardiac|cardiac silhouette|cardiac shadow)(?: size)? (?:is |remains |appears )?"
        r"(?:near |at |within )?(?:the )?(?:upper|top|high)(?: limits?| range| end)?(?: of)?(?: the)? normal"
        r"(?: limits?| range)?",
        ("Cardiomegaly",),
    ),
    (
        r"(?:upper limits? (?:of )?|top |high |upper )normal (?:heart|cardiac) size",
        ("Cardiomegaly",),
    ),
    (
        r"(?:pleural spaces?|costophrenic angles?|costophrenic sulci) (?:are |is |appear |appears )?"
        r"(?:clear|sharp|normal|preserved|unremarkable)",
        ("Pleural Effusion",),
    ),
)
_NORMAL_SUBJECT_OBSERVATIONS: tuple[tuple[str, str], ...] = (
    (r"heart|cardiac|cardio|cardiopericardial", "Cardiomegaly"),
    (r"mediastin|cardiomediastinal", "Enlarged Cardiomediastinum"),
    (r"vascularity|vasculature|vascular", "Edema"),
)

# Sentences/phrases that make a report read as normal.
NORMAL_REPORT_PHRASES: tuple[str, ...] = (
    r"normal (?:chest|study|exam\w*|radiograph\w*|x-?ray|film)",
    r"no (?:acute |active )?(?:cardiopulmonary|pulmonary|intrathoracic|radiographic|thoracic)\w*"
    r"(?: abnormalit\w*| disease| process| findings?| pathology)?",
    r"no acute (?:disease|abnormalit\w*|findings?|process)",
    r"(?:lungs?|lung fields?) (?:are |is )?(?:grossly |otherwise )?clear",
    r"within normal limits",
    r"unremarkable",
    r"no (?:active )?disease",
    r"negative (?:chest|study|exam\w*)",
)

# Cues. Pre-cues precede the mention inside its clause; post-cues follow it inside its clause.
PSEUDO_NEGATIONS: tuple[str, ...] = (
    r"no (?:significant |substantial |appreciable |definite |interval |other |major |acute )*"
    r"(?:change|changes|increase|decrease|progression|worsening|improvement|difference)",
    r"not (?:significantly )?(?:changed|increased|decreased|improved)",
    r"without (?:significant |interval )?(?:change|changes|progression)",
    r"not only",
    r"not well (?:seen|visualized|evaluated)",
    r"no longer (?:seen )?(?:definite|evident)",  # handled as negation below; kept narrow on purpose
    r"gram negative",
)

PRE_NEGATIONS: tuple[str, ...] = (
    r"no",
    r"not",
    r"without",
    r"negative for",
    r"free of",
    r"clear of",
    r"absence of",
    r"absent",
    r"resolution of",
    r"resolved",
    r"ruled out",
    r"rule(?:s)?[\- ]out",
    r"to exclude",
    r"exclude",
    r"neither",
    r"nor",
    r"never",
    r"removal of",
    r"removed",
    r"no longer",
    r"denies",
    r"negative",
    r"resolving",
    r"cleared",
)

POST_NEGATIONS: tuple[str, ...] = (
    r"(?:is|are|was|were|has been|have been)?\s*(?:not|no longer) (?:seen|identified|visualized|visible|"
    r"appreciated|demonstrated|present|evident|noted|detected|apparent|shown|definitely seen|"
    r"convincingly seen|clearly seen|enlarged)",
    r"(?:has|have|had)? ?(?:resolved|cleared|disappeared)",
    r"(?:is|are|has been|have been)? ?(?:absent|removed|ruled out)",
    r"(?:is|are) negative",
    r"(?:is|are) (?:now )?gone",
)

# Uncertainty that wraps a negation word: checked before negation.
PRE_UNCERTAIN_OVER_NEGATION: tuple[str, ...] = (
    r"(?:cannot|can not|can't|could not|couldn't|not) (?:be )?(?:entirely |completely |definitely |totally )?"
    r"(?:exclude\w*|rule\w* out)",
    r"not (?:be )?(?:entirely |completely |definitely )?(?:excluded|ruled out)",
    r"no definite (?:evidence )?(?:of )?(?:focal )?",
)
POST_UNCERTAIN_OVER_NEGATION: tuple[str, ...] = (
    r"(?:cannot|can not|can't|could not|not) (?:be )?(?:\w+ly )?(?:exclude\w*|rule\w* out)",
    r"(?:is|are)? ?not (?:entirely |completely |definitely )?(?:excluded|ruled out)",
)

PRE_UNCERTAIN: tuple[str, ...] = (
    r"may",
    r"might",
    r"could",
    r"possibl[ey]",
    r"probabl[ey]",
    r"(?:most |more )?likely",
    r"presum\w+",
    r"perhaps",
    r"suggest\w*",
    r"suspicious",
    r"suspect\w*",
    r"concern(?:ing)? (?:for|of)",
    r"question\w*",
    r"equivocal",
    r"borderline",
    r"versus",
    r"vs\.?",
    r"differential",
    r"indeterminate",
    r"uncertain",
    r"(?:cannot|can not|can't) (?:be )?(?:entirely )?(?:exclude\w*|rule\w* out)",
    r"(?:mild|minimal|slight)ly? (?:prominent|prominence)",
    r"upper limits? (?:of )?normal",
    r"upper (?:range|limits?) of normal",
    r"top (?:normal|limits? of normal)",
    r"(?:represent|reflect)(?:s|ing)?",
    r"atypical",
    r"would be (?:difficult|hard) to exclude",
    r"worrisome for",
    r"in keeping with",
    r"(?:may|might|could) represent",
)
# "X or Y", "X versus Y": the alternatives right next to each other are uncertain, nothing further.
_PRE_ALTERNATIVE = r"(?:^|[\s,])(?:or|versus|vs\.?|and/or)\s+(?:[\w\-]+\s+){0,2}$"
_POST_ALTERNATIVE = r"^[\s,]*(?:[\w\-]+\s+){0,1}(?:or|versus|vs\.?|and/or)(?=\s)"
POST_UNCERTAIN: tuple[str, ...] = (
    r"(?:is|are)? ?(?:possible|possibly|probable|suspected|questioned|likely|not excluded|considered)",
    r"(?:may|might|could) (?:be|represent|reflect|have)",
    r"(?:is|are) (?:a )?(?:consideration|concern)",
)

# Words that end a cue's scope inside a sentence.
CLAUSE_BREAKS: tuple[str, ...] = (
    r";",
    r":",
    r"\bbut\b",
    r"\bhowever\b",
    r"\balthough\b",
    r"\bthough\b",
    r"\bwhereas\b",
    r"\bwhile\b",
    r"\byet\b",
    r"\bexcept\b",
    r"\bwith the exception of\b",
    r"\baside from\b",
    r"\bapart from\b",
    r"\bother than\b",
    r"\bwhich\b",
    r"\bthat (?:is|are|was|were)\b",
    r"\bwith (?:a |an |the )?(?:new |persistent |stable |unchanged |residual |continued )?(?:(?:mild|moderate|small|large|minimal|trace|left|right|bilateral)\w* )+",
    r"(?:,\s*|\s)and (?:there (?:is|are)|the|a|an|mild|moderate|small|large|left|right|bilateral|"
    r"stable|new|persistent|minimal|trace|unchanged)\b",
    r",\s*(?:there (?:is|are)|there has been|otherwise)\b",
    r"\bthere (?:is|are|has been|have been)\b",
    r"\bsecondary to\b",
    r"\bdue to\b",
    r"\bconsistent with\b",
    r"\bcompatible with\b",
    r"\bin keeping with\b",
    r"\bwhich may\b",
    r"\bmay\b",
    r"\bresulting in\b",
    r"\bcausing\b",
    r"\blikely\b",
    r"\bprobabl[ey]\b",
    r"\bpossibl[ey]\b",
    r"\bdespite\b",
)

# Laterality words; "bibasilar" and similar count as bilateral.
_LATERALITY_WORDS: tuple[tuple[str, str], ...] = (
    (r"bilateral(?:ly)?|both|bibasilar|bibasal|biapical|bilobar|bi-?basilar", "bilateral"),
    (r"left(?:-sided)?|lingula\w*|lul|lll", "left"),
    (r"right(?:-sided)?|rul|rml|rll|right middle lobe|middle lobe", "right"),
)
LATERALITIES: tuple[str, ...] = ("left", "right", "bilateral")


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Label:
    """The label of one observation in one report.

    Attributes:
        value: ``"positive"``, ``"negative"`` or ``"uncertain"``.
        laterality: ``"left"``, ``"right"``, ``"bilateral"`` or None where the report states no side.
    """

    value: str
    laterality: str | None = None

    def __post_init__(self) -> None:
        if self.value not in VALUES:
            raise ValueError(f"Label.value must be one of {VALUES}, got {self.value!r}")
        if self.laterality is not None and self.laterality not in LATERALITIES:
            raise ValueError(
                f"Label.laterality must be one of {LATERALITIES} or None, got {self.laterality!r}"
            )


@dataclass(frozen=True)
class Mention:
    """One mention of an observation in one sentence.

    Attributes:
        observation: one of ``OBSERVATIONS``.
        value: ``"positive"``, ``"negative"`` or ``"uncertain"`` for this mention alone.
        laterality: the side stated next to the mention, or None.
        sentence_index: index of the sentence in the text the mention came from.
        sentence: that sentence's text (as written, not lower-cased).
        start: character offset of the mention in the sentence.
        end: character offset just after the mention.
    """

    observation: str
    value: str
    laterality: str | None
    sentence_index: int
    sentence: str
    start: int
    end: int

    @property
    def phrase(self) -> str:
        """The mention's text as written."""
        return self.sentence[self.start : self.end]


# ---------------------------------------------------------------------------------------------
# Compiled patterns (built once per process; pure data, no state)
# ---------------------------------------------------------------------------------------------


def _alt(phrases: Iterable[str]) -> str:
    return "|".join(f"(?:{p})" for p in phrases)


def _bounded(phrases: Iterable[str]) -> re.Pattern[str]:
    # (?<![\w-]) and (?![\w]) act as word boundaries that also respect hyphenated words.
    return re.compile(rf"(?<![\w])(?:{_alt(phrases)})(?![\w])")


_MENTION_RES: dict[str, re.Pattern[str]] = {obs: _bounded(ps) for obs, ps in MENTION_PHRASES.items()}
_EXCLUDED_RE = _bounded(EXCLUDED_PHRASES)
_NORMAL_RES: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = tuple(
    (_bounded([p]), obs) for p, obs in NORMAL_PHRASES
)
_NORMAL_REPORT_RE = _bounded(NORMAL_REPORT_PHRASES)
_PSEUDO_NEG_RE = _bounded(PSEUDO_NEGATIONS)
_PRE_NEG_RE = _bounded(PRE_NEGATIONS)
_POST_NEG_RE = _bounded(POST_NEGATIONS)
_PRE_UNC_NEG_RE = _bounded(PRE_UNCERTAIN_OVER_NEGATION)
_POST_UNC_NEG_RE = _bounded(POST_UNCERTAIN_OVER_NEGATION)
_PRE_UNC_RE = re.compile(_bounded(PRE_UNCERTAIN).pattern + r"|\?")  # a "?" before a finding questions it
_POST_UNC_RE = _bounded(POST_UNCERTAIN)
_PRE_ALT_RE = re.compile(_PRE_ALTERNATIVE)
_POST_ALT_RE = re.compile(_POST_ALTERNATIVE)
_CLAUSE_RE = re.compile(_alt(CLAUSE_BREAKS))
_LATERALITY_RES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (_bounded([p]), side) for p, side in _LATERALITY_WORDS
)
_SENTENCE_END_RE = re.compile(r"(?<!\d)\.(?!\d)|[!?](?=\s|$)|\n\s*\n|\n(?=\s*[A-Z0-9\-\u2022*])")
_NUMBERED_RE = re.compile(r"^\s*(?:\d+[.)]|[-\u2022*])\s+")


# ---------------------------------------------------------------------------------------------
# Sentences and clauses
# ---------------------------------------------------------------------------------------------


def split_sentences(text: str) -> list[str]:
    """Split report text into sentences (periods not inside numbers, "!", "?", blank lines).

    Args:
        text: free report text; None-like empty strings give an empty list.

    Returns:
        The sentences, stripped, empty ones dropped, in order.
    """
    if not text:
        return []
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END_RE.finditer(text):
        end = match.end() if match.group(0) in "!?" else match.start()
        piece = text[start:end]
        start = match.end()
        piece = _NUMBERED_RE.sub("", piece).strip()
        if piece.strip(" .,;:-"):
            sentences.append(piece)
    tail = _NUMBERED_RE.sub("", text[start:]).strip()
    if tail.strip(" .,;:-"):
        sentences.append(tail)
    return sentences


def _mask(text: str, spans: Iterable[tuple[int, int]]) -> str:
    chars = list(text)
    for a, b in spans:
        for i in range(a, b):
            chars[i] = " " if chars[i].isspace() else "#"
    return "".join(chars)


def _clause_bounds(lowered: str) -> list[int]:
    """Character offsets where clauses start and end (always includes 0 and len)."""
    cuts = {0, len(lowered)}
    for match in _CLAUSE_RE.finditer(lowered):
        cuts.add(match.start())
    return sorted(cuts)


def _clause_of(cuts: list[int], start: int, end: int) -> tuple[int, int]:
    lo = max(c for c in cuts if c <= start)
    hi_candidates = [c for c in cuts if c >= end]
    hi = min(hi_candidates) if hi_candidates else cuts[-1]
    return lo, hi


def _laterality(
    lowered: str, start: int, end: int, lo: int, hi: int, taken: list[tuple[int, int]]
) -> str | None:
    """The side stated closest before the mention (same clause), else just after it."""
    found: list[tuple[int, int, str]] = []
    for pattern, side in _LATERALITY_RES:
        for match in pattern.finditer(lowered, lo, hi):
            found.append((match.start(), match.end(), side))
    if not found:
        return None
    before = [f for f in found if f[1] <= start]
    inside = [f for f in found if f[0] >= start and f[1] <= end]
    after = [f for f in found if f[0] >= end]
    sides = {f[2] for f in inside}
    if sides:
        return "bilateral" if len(sides) > 1 else sides.pop()
    if before:
        a, b, side = max(before, key=lambda f: f[1])
        between = (b, start)
        # a different mention between the side word and this one takes the side word for itself,
        # unless they are joined as a list ("left lower lobe atelectasis and effusion").
        if not any(between[0] <= t0 and t1 <= between[1] for t0, t1 in taken) and start - b <= 60:
            pair = [f for f in before if f[2] != side and b - f[1] <= 12]
            return "bilateral" if pair else side
    if after:
        a, b, side = min(after, key=lambda f: f[0])
        if a - end <= 30:
            return side
    return None


def _value_for(lowered: str, start: int, end: int, lo: int, hi: int) -> str:
    """Label one mention from the cues in its clause."""
    pre = lowered[lo:start]
    inside = lowered[start:end]
    post = lowered[end:hi]
    if _PRE_UNC_NEG_RE.search(pre) or _POST_UNC_NEG_RE.search(post):
        return UNCERTAIN
    if _PRE_NEG_RE.search(pre) or _PRE_NEG_RE.search(inside) or _POST_NEG_RE.match(post.lstrip(" ,")):
        return NEGATIVE
    if _POST_NEG_RE.search(post[:40]):
        return NEGATIVE
    if _PRE_UNC_RE.search(pre) or _PRE_UNC_RE.search(inside) or _POST_UNC_RE.search(post[:50]):
        return UNCERTAIN
    if _PRE_ALT_RE.search(pre) or _POST_ALT_RE.search(post):
        return UNCERTAIN
    return POSITIVE


def label_sentence(sentence: str, index: int = 0) -> list[Mention]:
    """Find and label every observation mention in one sentence.

    This is the sentence-level machinery that ``label_report`` and ``medvlm.consistency`` share.

    Args:
        sentence: one sentence (see ``split_sentences``).
        index: the sentence's index in its text, copied into each mention.

    Returns:
        The mentions in order of position; the internal "other abnormality" observation is
        included (its name starts with "_") so that callers can judge whether a text reads as normal.
    """
    lowered = sentence.lower()
    masked = _PSEUDO_NEG_RE.sub(lambda m: "#" * len(m.group(0)), lowered)
    excluded = [m.span() for m in _EXCLUDED_RE.finditer(masked)]
    search_text = _mask(masked, excluded)
    cuts = _clause_bounds(masked)

    mentions: list[Mention] = []
    taken: list[tuple[int, int]] = []
    # Normal statements first: they claim their span so that no positive mention overlaps them.
    for pattern, observations in _NORMAL_RES:
        for match in pattern.finditer(masked):
            s, e = match.span()
            if any(s < t1 and t0 < e for t0, t1 in taken):
                continue
            if not observations:
                observations = tuple(o for p, o in _NORMAL_SUBJECT_OBSERVATIONS if re.search(p, masked[s:e]))
                if not observations:
                    continue
            taken.append((s, e))
            for obs in observations:
                mentions.append(Mention(obs, NEGATIVE, None, index, sentence, s, e))
    raw: list[tuple[int, int, str]] = []
    for obs, pattern in _MENTION_RES.items():
        for match in pattern.finditer(search_text):
            raw.append((match.start(), match.end(), obs))
    # Longest match first, so "pleural effusion" is not also "effusion", and phrases do not overlap.
    raw.sort(key=lambda r: (-(r[1] - r[0]), r[0]))
    chosen: list[tuple[int, int, str]] = []
    for s, e, obs in raw:
        if any(s < t1 and t0 < e for t0, t1 in taken):
            continue
        if any(s < c1 and c0 < e and (c0, c1) != (s, e) for c0, c1, _ in chosen):
            continue
        if any((c0, c1, cobs) == (s, e, obs) for c0, c1, cobs in chosen):
            continue
        chosen.append((s, e, obs))
    spans = [(s, e) for s, e, _ in chosen]
    for s, e, obs in chosen:
        lo, hi = _clause_of(cuts, s, e)
        value = _value_for(masked, s, e, lo, hi)
        side = _laterality(masked, s, e, lo, hi, [t for t in spans if t != (s, e)])
        mentions.append(Mention(obs, value, side, index, sentence, s, e))
    mentions.sort(key=lambda m: (m.start, m.observation))
    return mentions


def find_mentions(text: str) -> list[Mention]:
    """All observation mentions in a text, sentence by sentence.

    Args:
        text: report text (one or more sentences).

    Returns:
        Mentions in reading order, each with its sentence index within ``split_sentences(text)``.
    """
    mentions: list[Mention] = []
    for i, sentence in enumerate(split_sentences(text)):
        mentions.extend(label_sentence(sentence, i))
    return mentions


_RANK = {POSITIVE: 2, UNCERTAIN: 1, NEGATIVE: 0}


def aggregate(
    mentions: Iterable[Mention], *, text: str = "", devices_block_no_finding: bool = False
) -> dict[str, Label]:
    """Combine mention labels into one label per observation (positive > uncertain > negative).

    Args:
        mentions: mentions from ``find_mentions``/``label_sentence``.
        text: the text they came from; used only to decide whether it reads as a normal report.
        devices_block_no_finding: when True, a positive or uncertain Support Devices label also
            keeps "No Finding" from being positive. False (the default) is CheXpert's rule: a
            device is not a finding. True follows the IU curators' convention (they never tag a
            report that mentions a device ``normal``); use it to compare with their tags.

    Returns:
        Observation name -> ``Label``, in CheXpert order, unmentioned observations left out.
    """
    best: dict[str, str] = {}
    sides: dict[str, set[str]] = {}
    for m in mentions:
        if m.observation not in best or _RANK[m.value] > _RANK[best[m.observation]]:
            best[m.observation] = m.value
        if m.laterality and m.value != NEGATIVE:
            sides.setdefault(m.observation, set()).add(m.laterality)
    other = best.pop(_OTHER, None)
    abnormal = any(
        v != NEGATIVE for obs, v in best.items() if devices_block_no_finding or obs != "Support Devices"
    )
    if not abnormal and other in (None, NEGATIVE):
        reads_normal = bool(_NORMAL_REPORT_RE.search(text.lower())) or any(
            v == NEGATIVE for v in best.values()
        )
        if reads_normal:
            best["No Finding"] = POSITIVE
    labels: dict[str, Label] = {}
    for obs in OBSERVATIONS:
        if obs not in best:
            continue
        side_set = sides.get(obs, set())
        side = None
        if best[obs] != NEGATIVE and side_set:
            side = side_set.pop() if len(side_set) == 1 else "bilateral"
        labels[obs] = Label(best[obs], side)
    return labels


def label_report(text: str, *, devices_block_no_finding: bool = False) -> dict[str, Label]:
    """Label a report's text with CheXpert's 14 observations.

    Args:
        text: the report text (for example findings and impression joined).
        devices_block_no_finding: see ``aggregate``; False (default) keeps CheXpert's semantics.

    Returns:
        Observation name -> ``Label`` for every observation the text mentions, in CheXpert order;
        observations not mentioned are left out. "No Finding" appears (positive) only when the
        text reads as normal.
    """
    return aggregate(find_mentions(text), text=text, devices_block_no_finding=devices_block_no_finding)


def report_text(record: Mapping[str, object]) -> str:
    """Findings and impression of a report record joined into one text (missing ones skipped)."""
    parts = []
    for key in ("findings", "impression"):
        value = record.get(key)
        if isinstance(value, str) and value.strip():
            part = value.strip()
            parts.append(part if part.endswith((".", "!", "?")) else part + ".")
    return "\n\n".join(parts)


def label_record(record: Mapping[str, object], *, devices_block_no_finding: bool = False) -> dict[str, Label]:
    """Label a report record from its ``findings`` and ``impression`` fields.

    Args:
        record: a mapping with optional string fields ``findings`` and ``impression``.
        devices_block_no_finding: see ``aggregate``; False (default) keeps CheXpert's semantics.

    Returns:
        As ``label_report``.

    Raises:
        ValueError: when neither field is present as a string.
    """
    if not any(isinstance(record.get(k), str) for k in ("findings", "impression")):
        raise ValueError("record has neither a 'findings' nor an 'impression' string")
    return label_report(report_text(record), devices_block_no_finding=devices_block_no_finding)


def labels_as_strings(labels: Mapping[str, Label]) -> dict[str, str]:
    """``{observation: value}`` with plain strings, in CheXpert order (for JSON output)."""
    return {obs: labels[obs].value for obs in OBSERVATIONS if obs in labels}
