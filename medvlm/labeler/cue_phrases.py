"""The labeler's cue tables: pure data, no code (the mention tables are in ``phrases``).

Negation and uncertainty cues, the words that end a cue's scope (clause breaks) and laterality
words. Every entry is a regular expression over lower-cased text; ``medvlm.labeler.patterns``
compiles them once. After an edit, run ``tests/medvlm/test_labeler.py`` and
``benchmarks/score_labeler.py`` (its macro-F1 must not drop).
"""

from __future__ import annotations

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
PRE_ALTERNATIVE = r"(?:^|[\s,])(?:or|versus|vs\.?|and/or)\s+(?:[\w\-]+\s+){0,2}$"
POST_ALTERNATIVE = r"^[\s,]*(?:[\w\-]+\s+){0,1}(?:or|versus|vs\.?|and/or)(?=\s)"
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
LATERALITY_WORDS: tuple[tuple[str, str], ...] = (
    (r"bilateral(?:ly)?|both|bibasilar|bibasal|biapical|bilobar|bi-?basilar", "bilateral"),
    (r"left(?:-sided)?|lingula\w*|lul|lll", "left"),
    (r"right(?:-sided)?|rul|rml|rll|right middle lobe|middle lobe", "right"),
)
