"""The labeler's mention tables: pure data, no code (the cue tables are in ``cue_phrases``).

Every entry is a regular expression over lower-cased text; ``medvlm.labeler.patterns`` adds word
boundaries around each and compiles them once. To teach the labeler a new synonym, a phrase that
only looks like a mention, or a normal phrase, edit this file, then run
``tests/medvlm/test_labeler.py`` and ``benchmarks/score_labeler.py`` (its macro-F1 must not drop).
"""

from __future__ import annotations

# Internal pseudo-observation: abnormalities outside the 14 (granuloma, emphysema, scoliosis ...).
# It is never output; an asserted one stops "No Finding" from being positive. Its name starts
# with "_" so that callers of ``label_sentence`` can tell it from the 14.
OTHER = "_other abnormality"

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
    OTHER: (
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
# gives negative labels to the observations its words name (``NORMAL_SUBJECT_OBSERVATIONS``).
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
NORMAL_SUBJECT_OBSERVATIONS: tuple[tuple[str, str], ...] = (
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
