"""A cleaned country table built from the `countryinfo` package, parsed once per process.

countryinfo's raw data has duplicates (Burma/Myanmar, two Palestines, two Vatican entries), historical states
(Netherlands Antilles, Serbia and Montenegro), parts of countries (Wales, Scotland), entries without a capital
(Antarctica, Bouvet Island), outdated names and one-sided border lists. The rules below keep only what a grader can
trust; every exclusion is listed here with its reason so the data's limits stay visible.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from calib.tasks.normalize import normalize_answer

# Entities that no longer exist: questions about them have no current answer.
HISTORICAL = {"ANT": "Netherlands Antilles, dissolved 2010", "SCG": "Serbia and Montenegro, dissolved 2006"}

# Current short names where countryinfo keeps an old or formal one (the old name stays an alias).
RENAMED = {
    "MMR": "Myanmar",
    "MKD": "North Macedonia",
    "SWZ": "Eswatini",
    "VAT": "Vatican City",
    "PSE": "Palestine",
}

# Capitals that are disputed, split between several cities, or recorded wrongly: no capital question for them.
AMBIGUOUS_CAPITAL = {
    "BOL": "Sucre (constitutional) vs La Paz (seat of government)",
    "ZAF": "three capitals: Pretoria, Cape Town, Bloemfontein",
    "SWZ": "Mbabane (administrative) vs Lobamba (royal, legislative)",
    "LKA": "Sri Jayawardenepura Kotte (official) vs Colombo (commercial); data says Colombo",
    "CIV": "Yamoussoukro (official) vs Abidjan (seat of government)",
    "BEN": "Porto-Novo (official) vs Cotonou (seat of government)",
    "ISR": "status of Jerusalem disputed",
    "PSE": "duplicates disagree (Ramallah vs Jerusalem); disputed",
    "NRU": "no official capital",
    "TKL": "no capital; the seat rotates between atolls",
    "HKG": "a special administrative region; data gives 'City of Victoria'",
    "MAC": "a special administrative region; no capital in data",
    "VAT": "city-state; duplicates disagree",
}

# Spellings and renamings of capitals that the data lacks; the first entry becomes the canonical answer.
CAPITAL_ALIASES = {
    "Nur-Sultan": ("Astana", "Nur-Sultan"),  # renamed back to Astana in 2022
    "Kyiv": ("Kyiv", "Kiev"),
    "Naypyidaw": ("Naypyidaw", "Nay Pyi Taw", "Naypyitaw"),
    "Washington D.C.": ("Washington, D.C.", "Washington"),
    "Bern": ("Bern", "Berne"),
    "Ulaanbaatar": ("Ulaanbaatar", "Ulan Bator"),
    "South Tarawa": ("South Tarawa", "Tarawa"),
    "City of San Marino": ("San Marino", "City of San Marino"),
}

# Countries spanning two continents (or whose continent is disputed) and remote territories with none.
AMBIGUOUS_CONTINENT = {
    "RUS", "TUR", "KAZ", "EGY", "GEO", "AZE", "ARM", "CYP", "IDN", "TLS",  # transcontinental or disputed
    "IOT", "ATF", "BVT", "SGS", "UMI",  # remote islands without a clear continent
}  # fmt: skip

# Province lists that are wrong in countryinfo (checked by hand); the overlap and run-together checks in
# province_issues() catch the rest (e.g. Angola's list includes Andorra's parishes, South Sudan's is Spain's).
BAD_PROVINCES = {
    "COD": "lists the Republic of the Congo's departments",
    "COG": "lists the Democratic Republic of the Congo's provinces",
    "IOT": "lists the British Virgin Islands' islands",
    "FRA": "lists the regions abolished in 2016",
}
MIN_PROVINCE_AREA_KM2 = 20_000  # below this, countryinfo's 'provinces' are parishes, atolls or municipalities

# Names that read naturally with "the" in a question ("the capital of the Netherlands").
_THE_FIRST = {"United", "Republic", "Democratic", "Federated", "Isle", "British", "French", "Central"}
_THE_LAST = {"Islands", "Republic", "Emirates", "Netherlands", "Philippines", "Maldives", "Seychelles", "Comoros",
             "States", "Kingdom", "Lands", "Territory", "Bahamas", "Gambia"}  # fmt: skip
_NOT_THE = {"French Guiana", "French Polynesia"}


@dataclass(frozen=True)
class Country:
    """One cleaned country or territory."""

    code: str  # ISO 3166 alpha-3
    name: str
    aliases: tuple[str, ...]  # name first, then other spellings
    capital: str | None
    capital_aliases: tuple[str, ...]
    region: str  # continent-level UN region: Africa, Americas, Asia, Europe, Oceania
    subregion: str
    intermediate_region: str
    borders: tuple[str, ...]  # alpha-3 codes, exactly as the data lists them
    provinces: tuple[str, ...]
    area_km2: float

    @property
    def name_in_sentence(self) -> str:
        """'the Netherlands', 'the Bahamas', 'Germany': the name as it reads inside a question."""
        words = self.name.split()
        if self.name.startswith("The "):
            return "the " + self.name[4:]
        if self.name not in _NOT_THE and (words[0] in _THE_FIRST or words[-1] in _THE_LAST):
            return "the " + self.name
        return self.name

    @property
    def continent(self) -> tuple[str, ...] | None:
        """Continent answer with aliases, or None when ambiguous (transcontinental, remote territory)."""
        if self.code in AMBIGUOUS_CONTINENT:
            return None
        if self.region == "Americas":
            americas = ("the Americas", "America")
            main = "South America" if self.intermediate_region == "South America" else "North America"
            return (main, *americas)
        if self.region == "Oceania":
            return ("Oceania", "Australia and Oceania", "Australasia")
        return (self.region,) if self.region in ("Africa", "Asia", "Europe") else None


def _initials(text: str) -> str:
    """'United States of America' -> 'USA'; 'Svalbard and Jan Mayen' -> 'SaJM' (so its code is not an alias)."""
    return "".join(w[0] for w in text.replace("-", " ").split() if w not in ("of", "the"))


def _clean_aliases(name: str, raw: dict, extra_names: list[str]) -> list[str]:
    """Name, other names, and alternative spellings minus ISO codes, demonyms and fragments."""
    iso = raw.get("ISO") or {}
    codes = {str(iso.get("alpha2") or "").upper(), str(iso.get("alpha3") or "").upper()}
    demonym = normalize_answer(raw.get("demonym") or "")
    candidates = [name, *extra_names, *(raw.get("altSpellings") or [])]
    out: list[str] = []
    for alias in candidates:
        alias = str(alias).strip().strip(",")
        if not alias or normalize_answer(alias) in ("", demonym):
            continue
        if alias.upper() in codes and (len(alias) < 3 or not any(_initials(o) == alias for o in candidates)):
            continue  # 'DE', 'DEU' are codes, not names; 'USA' stays (initials of 'United States of America')
        out.append(alias)
    return out


def _display_name(name: str, aliases: list[str]) -> str:
    """'Virgin Islands, British' -> 'British Virgin Islands' when the data has that word order as an alias."""
    if ", " not in name:
        return name
    words = sorted(normalize_answer(name).split())
    for alias in aliases:
        if ", " not in alias and sorted(normalize_answer(alias).split()) == words:
            return alias
    return name


def _pick(entries: list[dict]) -> dict:
    """Among duplicate entries of one ISO code, prefer the one whose spellings include its own alpha-2 code."""

    def rank(raw: dict) -> tuple[int, int, int]:
        alpha2 = (raw.get("ISO") or {}).get("alpha2")
        clean = "," not in raw["name"] and "(" not in raw["name"]
        return (alpha2 in (raw.get("altSpellings") or []), clean, len(raw.get("provinces") or []))

    return max(entries, key=rank)


def _capital(code: str, entries: list[dict]) -> tuple[str | None, tuple[str, ...]]:
    capitals = {e.get("capital") if isinstance(e.get("capital"), str) else None for e in entries}
    if code in AMBIGUOUS_CAPITAL or len(capitals) != 1:
        return None, ()
    capital = (capitals.pop() or "").strip()
    if not capital or "/" in capital:
        return None, ()
    aliases = CAPITAL_ALIASES.get(capital, (capital,))
    return aliases[0], tuple(aliases)


@functools.cache
def load_countries() -> dict[str, Country]:
    """ISO alpha-3 code -> cleaned Country. Cached: countryinfo parses ~2 MB of JSON."""
    from countryinfo import CountryInfo  # imported here so importing calib.tasks stays cheap

    by_code: dict[str, list[dict]] = {}
    for raw in CountryInfo.all().values():
        iso = raw.get("ISO") or {}
        code, alpha2 = str(iso.get("alpha3") or "").upper(), str(iso.get("alpha2") or "")
        if not raw.get("name") or not code or not alpha2 or not raw.get("region") or not raw.get("subregion"):
            continue  # parts of countries (Wales, Scotland) and unclaimed land (Antarctica) lack these
        if code in HISTORICAL:
            continue
        by_code.setdefault(code, []).append(raw)

    table: dict[str, Country] = {}
    for code, entries in sorted(by_code.items()):
        main = _pick(entries)
        others = [e["name"] for e in entries if e is not main]
        aliases = _clean_aliases(main["name"], main, others)
        for other in entries:
            if other is not main:
                aliases += _clean_aliases(other["name"], other, [])
        name = RENAMED.get(code) or _display_name(main["name"], aliases)
        capital, capital_aliases = _capital(code, entries)
        table[code] = Country(
            code=code,
            name=name,
            aliases=tuple(dict.fromkeys([name, *aliases])),
            capital=capital,
            capital_aliases=capital_aliases,
            region=main["region"].strip(),
            subregion=main["subregion"].strip(),
            intermediate_region=(main.get("intermediateregion") or "").strip(),
            borders=tuple(dict.fromkeys(b for e in entries for b in (e.get("borders") or []))),
            provinces=tuple(p.strip() for p in (main.get("provinces") or []) if p and p.strip()),
            area_km2=float(main.get("area") or 0.0),
        )
    return _drop_shared_aliases(table)


def _drop_shared_aliases(table: dict[str, Country]) -> dict[str, Country]:
    """An alias that names two entities cannot identify either: keep it only where it is the entity's own name."""
    owners: dict[str, set[str]] = {}
    for country in table.values():
        for alias in country.aliases:
            owners.setdefault(normalize_answer(alias), set()).add(country.code)
    cleaned = {}
    for code, country in table.items():
        keep = [a for i, a in enumerate(country.aliases) if i == 0 or len(owners[normalize_answer(a)]) == 1]
        cleaned[code] = Country(**{**country.__dict__, "aliases": tuple(keep)})
    return cleaned


def border_issues(table: dict[str, Country]) -> dict[str, str]:
    """Countries whose neighbour list cannot be trusted -> reason (unknown code or a one-sided border)."""
    issues: dict[str, str] = {}
    for code, country in table.items():
        for other in country.borders:
            if other not in table:
                issues.setdefault(code, f"neighbour code {other!r} is not a known country")
                continue
            if code not in table[other].borders:
                reason = f"one-sided border {code}-{other}"
                issues.setdefault(code, reason)
                issues.setdefault(other, reason)
    return issues


_GENERIC = {"central", "centre", "center", "north", "south", "east", "west", "northern", "southern", "eastern",
            "western", "nord", "sud", "est", "ouest", "saint", "st", "capital", "district", "islands"}  # fmt: skip


def province_aliases(province: str) -> tuple[str, ...]:
    """'Dubayy (Dubai)' -> ('Dubayy (Dubai)', 'Dubayy', 'Dubai'); '(city)'-style notes are not aliases."""
    m = re.fullmatch(r"(?P<head>[^()]+?)\s*\((?P<note>[^()]+)\)", province)
    if not m:
        return (province,)
    note = m.group("note").strip()
    extra = (note,) if note[:1].isupper() else ()
    return tuple(dict.fromkeys((province, m.group("head").strip(), *extra)))


def province_issues(table: dict[str, Country], min_shared: int = 4) -> dict[str, str]:
    """Countries whose province list cannot be trusted -> reason: listed wrong by hand (BAD_PROVINCES), names
    run together ('ManicalandMashonaland Central'), or sharing >= min_shared distinctive names with another
    country's list (one of the two lists is another country's)."""
    issues = dict(BAD_PROVINCES)
    distinct: dict[str, set[str]] = {}
    for code, country in table.items():
        names = {normalize_answer(p) for p in country.provinces}
        distinct[code] = {
            n for n in names if not set(n.split()) <= _GENERIC and not n.startswith(("saint ", "st "))
        }
        if any(re.search(r"[a-z][A-Z][a-z]", p) and not re.search(r"\bKwa", p) for p in country.provinces):
            issues.setdefault(code, "province names run together")
    codes = sorted(distinct)
    for i, a in enumerate(codes):
        for b in codes[i + 1 :]:
            shared = distinct[a] & distinct[b]
            if len(shared) >= min_shared:
                issues.setdefault(a, f"province list shares {len(shared)} names with {b}'s")
                issues.setdefault(b, f"province list shares {len(shared)} names with {a}'s")
    return issues
