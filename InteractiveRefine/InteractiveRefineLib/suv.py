"""Body-weight SUV from the tags of a PET DICOM series (pydicom datasets), QIBA's rules.

``SUVbw = rescaled pixel value x factor``; :func:`suv_factors` returns one factor per instance:

- Units ``BQML`` (Bq/mL): ``factor = weight[g] / decayed dose[Bq]``. DecayCorrection ``START``
  decays the dose to the scan reference time (SeriesDate/Time when it is not after the earliest
  AcquisitionDate/Time, else that earliest acquisition); ``ADMIN`` means the images are
  already corrected to the injection (no decay); ``NONE`` decays the dose to each instance's
  own AcquisitionDate/Time. Philips private tags are ignored for BQML.
- Units ``GML`` (g/mL): already SUVbw, factor 1.
- Units ``CNTS`` (Philips): the private SUV Scale Factor (7053,1000) when non-zero, else the
  Activity Concentration Scale Factor (7053,1009) x the BQML factor.
- Injection time: RadiopharmaceuticalStartDateTime, else RadiopharmaceuticalStartTime on the
  SeriesDate.

Missing or contradictory tags raise :class:`SuvError` naming the tag. Implausible values
(weight, dose, delay, whole-series SUVmax) raise too, unless ``allow_implausible`` is set: then
each is logged as a warning and returned in :attr:`SuvFactors.warnings`. Nothing is silently
wrong. The rules reproduce cornerstonejs/calculate-suv's published factors for eight vendor
series (``Testing/engine/test_suv.py``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from .errors import ImageError

logger = logging.getLogger(__name__)

#: Philips PET private group: SUV Scale Factor and Activity Concentration Scale Factor.
PHILIPS_SUV_SCALE = (0x7053, 0x1000)
PHILIPS_ACTIVITY_SCALE = (0x7053, 0x1009)

#: Plausible ranges (outside: refused unless ``allow_implausible``).
WEIGHT_KG = (2.0, 350.0)  # a newborn .. the heaviest patient a scanner table takes
DOSE_BQ = (1e7, 2e10)  # 10 MBq .. 20 GBq: a dose in MBq or mCi written as Bq falls outside
DELAY_S = (0.0, 12 * 3600.0)  # injection to scan; 12 h is > 6 F-18 half-lives
WHOLE_SERIES_SUVMAX = (1.0, 100.0)  # the hottest voxel of a whole-body FDG series

#: The tags that must agree across the instances of one series.
SERIES_TAGS = ("Units", "DecayCorrection", "PatientWeight", "SeriesDate", "SeriesTime")


class SuvError(ImageError):
    """A PET series whose SUV cannot be computed (or would be implausible)."""


@dataclass
class SuvFactors:
    """Per-instance SUVbw factors (same order as the datasets) and how they were found."""

    factors: np.ndarray
    units: str
    decay_correction: str
    method: str  #: e.g. "BQML decayed to the series time"
    delay_s: float | None = None  #: injection -> scan reference time (START), seconds
    warnings: list = field(default_factory=list)

    @property
    def factor(self) -> float:
        """The one factor of the series (raises when the instances differ, e.g. NONE)."""
        if not np.allclose(self.factors, self.factors[0], rtol=1e-12, atol=0):
            raise SuvError("the SUV factor differs between instances (DecayCorrection NONE)")
        return float(self.factors[0])


# ------------------------------------------------------------------ tag access
def _tag(ds, keyword: str, tag: str, required: bool = True):
    value = getattr(ds, keyword, None)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise SuvError(f"PET series has no {keyword} {tag}")
        return None
    return value


def _radiopharmaceutical(ds):
    seq = getattr(ds, "RadiopharmaceuticalInformationSequence", None)
    if not seq:
        raise SuvError("PET series has no RadiopharmaceuticalInformationSequence (0054,0016)")
    return seq[0]


def parse_time(text: str) -> timedelta:
    """DICOM TM (``HHMMSS.FFFFFF``, shorter forms allowed) as a time of day."""
    text = str(text).strip().replace(":", "")
    whole, _, fraction = text.partition(".")
    if not whole.isdigit() or len(whole) not in (2, 4, 6):
        raise ValueError(f"not a DICOM time: {text!r}")
    parts = [int(whole[i:i + 2]) for i in range(0, len(whole), 2)] + [0, 0]
    micro = float("0." + fraction) if fraction.isdigit() else 0.0
    return timedelta(hours=parts[0], minutes=parts[1], seconds=parts[2] + micro)


def parse_datetime(date: str, time: str) -> datetime:
    """DICOM DA + TM as a datetime."""
    day = datetime.strptime(str(date).strip(), "%Y%m%d")
    return day + parse_time(time)


def _parse_dt(text: str) -> datetime:
    """DICOM DT (``YYYYMMDDHHMMSS.FFFFFF``, an offset ``+HHMM`` ignored)."""
    text = str(text).strip().split("+")[0].split("-")[0]
    return parse_datetime(text[:8], text[8:] or "00")


def _checked(what: str, tag: str, parse):
    try:
        return parse()
    except (ValueError, TypeError) as exc:
        raise SuvError(f"PET series has an unreadable {what} {tag}: {exc}") from exc


# ------------------------------------------------------------------ times
def scan_time(datasets) -> datetime:
    """Scan reference time (QIBA): the series time unless it is after the earliest acquisition."""
    first = datasets[0]
    series = _checked("SeriesDate/SeriesTime", "(0008,0021)/(0008,0031)", lambda: parse_datetime(
        _tag(first, "SeriesDate", "(0008,0021)"), _tag(first, "SeriesTime", "(0008,0031)")))
    acquisitions = [acquisition_time(ds) for ds in datasets]
    earliest = min(acquisitions)
    return series if series <= earliest else earliest


def acquisition_time(ds) -> datetime:
    date = _tag(ds, "AcquisitionDate", "(0008,0022)", required=False) or _tag(
        ds, "SeriesDate", "(0008,0021)")
    return _checked("AcquisitionTime", "(0008,0032)", lambda: parse_datetime(
        date, _tag(ds, "AcquisitionTime", "(0008,0032)")))


def injection_time(ds) -> datetime:
    """RadiopharmaceuticalStartDateTime, else RadiopharmaceuticalStartTime on the SeriesDate."""
    info = _radiopharmaceutical(ds)
    stamp = getattr(info, "RadiopharmaceuticalStartDateTime", None)
    if stamp and str(stamp).strip():
        return _checked("RadiopharmaceuticalStartDateTime", "(0018,1078)", lambda: _parse_dt(stamp))
    start = _tag(info, "RadiopharmaceuticalStartTime", "(0018,1072)")
    return _checked("RadiopharmaceuticalStartTime", "(0018,1072)", lambda: parse_datetime(
        _tag(ds, "SeriesDate", "(0008,0021)"), start))


# ------------------------------------------------------------------ factors
class _Checks:
    """Collects implausible values: raise at once, or warn when overridden."""

    def __init__(self, allow: bool):
        self.allow, self.warnings = allow, []

    def __call__(self, value: float, bounds, message: str) -> None:
        if bounds[0] <= value <= bounds[1]:
            return
        text = f"{message} (plausible: {bounds[0]:g} to {bounds[1]:g})"
        if not self.allow:
            raise SuvError(text + "; pass allow_implausible (--allow-implausible-suv) to use it anyway")
        logger.warning("implausible PET tag, used as asked: %s", text)
        self.warnings.append(text)


def _weight_and_dose(ds, checks: _Checks) -> tuple[float, float, float]:
    weight = float(_tag(ds, "PatientWeight", "(0010,1030)"))
    if weight <= 0:
        raise SuvError(f"PET series has PatientWeight (0010,1030) = {weight:g}: no weight, no SUVbw")
    checks(weight, WEIGHT_KG, f"PatientWeight (0010,1030) = {weight:g} kg")
    info = _radiopharmaceutical(ds)
    dose = float(_tag(info, "RadionuclideTotalDose", "(0018,1074)"))
    if dose <= 0:
        raise SuvError(f"PET series has RadionuclideTotalDose (0018,1074) = {dose:g} Bq")
    checks(dose, DOSE_BQ, f"RadionuclideTotalDose (0018,1074) = {dose:g} Bq")
    half_life = float(_tag(info, "RadionuclideHalfLife", "(0018,1075)"))
    if half_life <= 0:
        raise SuvError(f"PET series has RadionuclideHalfLife (0018,1075) = {half_life:g} s")
    return weight, dose, half_life


def _delay(injected: datetime, scanned: datetime, checks: _Checks, what: str) -> float:
    seconds = (scanned - injected).total_seconds()
    if seconds < 0:
        raise SuvError(
            f"RadiopharmaceuticalStartTime (0018,1072) {injected:%Y-%m-%d %H:%M:%S} is after the "
            f"{what} {scanned:%Y-%m-%d %H:%M:%S}: injection after acquisition")
    checks(seconds, DELAY_S, f"injection to {what} = {seconds / 3600:.2f} h")
    return seconds


def _bqml(datasets, decay: str, checks: _Checks) -> tuple[np.ndarray, str, float | None]:
    weight, dose, half_life = _weight_and_dose(datasets[0], checks)
    injected = injection_time(datasets[0])
    if decay != "NONE":
        delay = _delay(injected, scan_time(datasets), checks, "scan start")  # checked for ADMIN too
    if decay == "ADMIN":
        return np.full(len(datasets), weight * 1000.0 / dose), "BQML corrected to the injection", delay
    if decay == "START":
        factor = weight * 1000.0 / (dose * 2.0 ** (-delay / half_life))
        return np.full(len(datasets), factor), "BQML decayed to the scan start", delay
    delays = [_delay(injected, acquisition_time(ds), checks, "acquisition") for ds in datasets]
    factors = weight * 1000.0 / (dose * 2.0 ** (-np.asarray(delays) / half_life))
    return factors, "BQML decayed to each instance's acquisition time", None


def _private(ds, tag) -> float:
    element = ds.get(tag)
    if element is None or element.value in (None, ""):
        return 0.0
    try:
        return float(str(element.value).strip())
    except ValueError as exc:
        raise SuvError(f"Philips private tag ({tag[0]:04X},{tag[1]:04X}) is not a number: "
                       f"{element.value!r}") from exc


def _cnts(datasets, decay: str, checks: _Checks) -> tuple[np.ndarray, str, float | None]:
    first = datasets[0]
    scale = _private(first, PHILIPS_SUV_SCALE)
    if scale > 0:
        return np.full(len(datasets), scale), "Philips SUV Scale Factor (7053,1000)", None
    activity = _private(first, PHILIPS_ACTIVITY_SCALE)
    if activity <= 0:
        raise SuvError("Units CNTS without a Philips SUV Scale Factor (7053,1000) or Activity "
                       "Concentration Scale Factor (7053,1009): counts cannot be converted to SUV")
    factors, _, delay = _bqml(datasets, decay, checks)
    return factors * activity, "Philips Activity Concentration Scale Factor (7053,1009) x BQML", delay


def _check_series(datasets) -> tuple[str, str]:
    if not datasets:
        raise SuvError("no PET instances")
    for keyword in SERIES_TAGS:
        values = {str(getattr(ds, keyword, "")).strip() for ds in datasets}
        if len(values) > 1:
            raise SuvError(f"{keyword} differs between the instances of the series: {sorted(values)}")
    units = str(_tag(datasets[0], "Units", "(0054,1001)")).strip().upper()
    if units not in ("BQML", "GML", "CNTS"):
        raise SuvError(f"Units (0054,1001) = {units!r}: only BQML, GML and CNTS can become SUVbw")
    decay = str(_tag(datasets[0], "DecayCorrection", "(0054,1102)")).strip().upper()
    if decay not in ("START", "ADMIN", "NONE"):
        raise SuvError(f"DecayCorrection (0054,1102) = {decay!r}: expected START, ADMIN or NONE")
    corrected = getattr(datasets[0], "CorrectedImage", None) or ()
    corrected = {str(v).strip().upper() for v in ([corrected] if isinstance(corrected, str) else corrected)}
    needed = {"ATTN"} | ({"DECY"} if decay != "NONE" else set())
    if units != "GML" and not needed <= corrected:
        raise SuvError(f"CorrectedImage (0028,0051) = {sorted(corrected)} lacks "
                       f"{sorted(needed - corrected)}: the values are not quantitative")
    return units, decay


def suv_factors(datasets, allow_implausible: bool = False) -> SuvFactors:
    """SUVbw factor of each instance of one PET series (pydicom datasets, any order).

    The factor multiplies the *rescaled* value (RescaleSlope/Intercept applied per instance).
    Raises :class:`SuvError` naming the tag when a tag is missing or contradictory, and for an
    implausible weight, dose or delay unless ``allow_implausible``.
    """
    datasets = list(datasets)
    units, decay = _check_series(datasets)
    checks = _Checks(allow_implausible)
    if units == "GML":
        factors, method, delay = np.ones(len(datasets)), "GML: already SUVbw", None
    elif units == "BQML":
        factors, method, delay = _bqml(datasets, decay, checks)
    else:
        factors, method, delay = _cnts(datasets, decay, checks)
    return SuvFactors(factors, units, decay, method, delay, checks.warnings)


def check_suv_range(suv: np.ndarray, info: SuvFactors, allow_implausible: bool = False) -> None:
    """Refuse (or warn, with ``allow_implausible``) a series whose SUVmax is outside 1..100."""
    checks = _Checks(allow_implausible)
    suvmax = float(np.nanmax(suv)) if suv.size else 0.0
    checks(suvmax, WHOLE_SERIES_SUVMAX,
           f"SUVmax of the series = {suvmax:.3g} with {info.method}: check PatientWeight (0010,1030), "
           "RadionuclideTotalDose (0018,1074) and Units (0054,1001)")
    info.warnings.extend(checks.warnings)
