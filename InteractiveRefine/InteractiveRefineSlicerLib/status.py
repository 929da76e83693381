"""The one status line the module shows after each step."""
from __future__ import annotations

#: At most this many clicks are named in the status line (the latest ones).
NAMED_CLICKS = 6


def describe(result, action: str, seconds: float, pending: int = 0, precision: str = "",
             exactFollows: bool = True, requestedDevice: str = "auto", classVolumes: dict | None = None,
             clickClasses=None, regionClass: str | None = None) -> str:
    """E.g. "2 click(s), GTVp 4.1 mL, device cpu, click 0.31 s, 40 % SUVmax region, SUVmax 12.3".

    A model with several classes: ``classVolumes`` (``{"GTVp": mL, "GTVn": mL}``) replaces the one
    volume and ``clickClasses`` names each click's class (the latest :data:`NAMED_CLICKS`), e.g.
    "3 click(s) (GTVn, GTVp, not tumour), GTVp 4.1 mL, GTVn 1.2 mL, device cpu, ..."; after a PET
    region ``regionClass`` names its class ("..., 40 % SUVmax GTVn region, SUVmax 6.2 (2.0 mL)")."""
    clicks = f"{result.n_clicks} click(s)"
    if clickClasses:
        names = list(clickClasses)
        shown = ", ".join(names[-NAMED_CLICKS:])
        clicks += f" ({'..., ' if len(names) > NAMED_CLICKS else ''}{shown})"
    if classVolumes:
        volumes = ", ".join(f"{name} {volume:.1f} mL" for name, volume in classVolumes.items())
    else:
        volumes = f"GTVp {result.volume_ml:.1f} mL"
    status = f"{clicks}, {volumes}, device {result.device}{precision}, {action} {seconds:.2f} s"
    threshold = (result.details or {}).get("threshold") if result.mode == "threshold" else None
    if threshold:
        region = f"{regionClass} region" if regionClass else "region"
        status += (f", {100 * threshold['fraction']:.0f} % SUVmax {region}, SUVmax {threshold['suvmax']:.1f}"
                   f" ({threshold['volume_ml']:.1f} mL)")
    if (result.details or {}).get("stage") == "unanchored":
        status += ", hot regions rejected (no tumour point yet)"
    if result.window is not None:  # a fast click: refined in a window around it
        status += " in a " + "x".join(str(b - a) for a, b in result.window) + " window"
    if not result.exact:
        status += ", preview" + (": exact mask follows" if exactFollows else "")
    if result.removed_ml > 0:
        status += f", removed {result.removed_ml:.1f} mL marked not tumour"
    if (result.details or {}).get("kept_rejected"):
        status += ", kept a region marked not tumour (this tumour point is on or beside it)"
    if pending > 0:
        status += f", {pending} pending click(s)"
    if requestedDevice == "cuda" and not str(result.device).startswith("cuda"):
        status += " (CUDA is not available: running on the CPU)"
    return status
