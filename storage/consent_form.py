"""The printable worker consent form (PRODUCT 4.6): bytes out, no database.

A worker with neither WhatsApp nor Telegram signs a printed form; the ASN hands
it (or its photo) to the PIC, who records its scan on the enrollment. The form
carries the enrollment's number, so the PIC can match a scan to its record.

Texts come translated from the caller (the worker's language, Indonesian);
this module only lays them out with fpdf2. fpdf2's built-in Helvetica covers
Latin-1 only: other characters are spelled in their closest Latin-1 form
(curly quotes as straight ones, "Ł" as "L") or as "?"; a name is never refused.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from collections.abc import Sequence
from datetime import datetime

_TYPOGRAPHY = str.maketrans(
    {"“": '"', "”": '"', "‘": "'", "’": "'", "–": "-", "—": "-", "…": "...", "•": "-"}
)


def _latin1(text: str) -> str:
    """`text` in what the PDF's core font can print (Latin-1), closest form first."""
    text = text.translate(_TYPOGRAPHY)
    out = []
    for char in text:
        if ord(char) < 256:
            out.append(char)
            continue
        base = unicodedata.normalize("NFKD", char).encode("latin-1", "ignore").decode("latin-1")
        out.append(base or "?")
    return "".join(out)


@dataclasses.dataclass(slots=True, frozen=True)
class ConsentForm:
    """What the form says, already in the worker's language."""

    title: str
    #: "Enrollment number 123": matches a scan to its record.
    reference: str
    #: (label, value) lines: worker, masked NIK, sponsor, OPD, programme, dues...
    facts: Sequence[tuple[str, str]]
    #: The consent text the worker agrees to (the WhatsApp request's words).
    consent_text: str
    #: The two answers to tick ("[ ] YES, I agree", "[ ] NO").
    choices: Sequence[str]
    #: Signature blocks: (role, name) for the worker and the sponsor.
    signatures: Sequence[tuple[str, str]]
    #: "Place, date: ....": filled in by hand.
    place_date: str
    #: Small print: the text version and what happens with the form.
    footer: str


def consent_form_pdf(form: ConsentForm, *, created_at: datetime) -> bytes:
    """The form as one A4 page of PDF (the same bytes for the same form and time)."""
    # Imported here: fpdf (with fontTools and Pillow) is ~27 MB resident, and a running
    # bot draws a form rarely; `sertakan run` should not carry it at idle.
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos

    pdf = FPDF(format="A4")
    pdf.set_creation_date(created_at)
    pdf.set_title(_latin1(form.title))
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    width = pdf.epw
    pdf.set_font("Helvetica", style="B", size=14)
    pdf.multi_cell(width, 7, _latin1(form.title), align="C", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", size=9)
    pdf.cell(width, 5, _latin1(form.reference), align="C", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)
    pdf.set_font("Helvetica", size=10)
    label_width = 50.0
    for label, value in form.facts:
        pdf.set_font("Helvetica", style="B", size=10)
        pdf.cell(label_width, 6, _latin1(label))
        pdf.set_font("Helvetica", size=10)
        pdf.multi_cell(
            width - label_width, 6, _latin1(value), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT
        )
    pdf.ln(4)
    pdf.multi_cell(width, 5.5, _latin1(form.consent_text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(3)
    pdf.set_font("Helvetica", style="B", size=11)
    for choice in form.choices:
        pdf.cell(width, 8, _latin1(choice), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)
    pdf.set_font("Helvetica", size=10)
    pdf.cell(width, 6, _latin1(form.place_date), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)
    column = width / max(len(form.signatures), 1)
    top = pdf.get_y()
    for index, (role, name) in enumerate(form.signatures):
        x = pdf.l_margin + index * column
        pdf.set_xy(x, top)
        pdf.cell(column - 8, 6, _latin1(role), align="C")
        # Room to sign, then the line and the printed name under it.
        pdf.line(x + 4, top + 30, x + column - 12, top + 30)
        pdf.set_xy(x, top + 31)
        pdf.cell(column - 8, 6, _latin1(f"( {name} )"), align="C")
    pdf.set_xy(pdf.l_margin, top + 42)
    pdf.set_font("Helvetica", size=8)
    pdf.multi_cell(width, 4.5, _latin1(form.footer), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    return bytes(pdf.output())
