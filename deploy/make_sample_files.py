"""Generate the binary documents of Sieve's bundled sample corpus.

``api/sample/`` holds a small demo corpus that ``sieve`` can ingest out of the box: short, self-written,
factual articles on unrelated topics (the water cycle, vaccines, photosynthesis, the Rust borrow checker, the
printing press, public-key cryptography, HTTP caching, plate tectonics, sourdough fermentation), spread over
every supported format so that a demo exercises every parser. The Markdown, text and HTML files are written by
hand; this script writes the two binary ones, ``plate-tectonics.pdf`` (two pages, with fpdf2) and
``sourdough-fermentation.docx`` (with a table, with python-docx), with fixed dates so that reruns give
byte-identical files. Every file in that folder is ingested, so no README lives there. Run it from
the repository root (needs the ``dev`` and ``ingest`` extras): ``python deploy/make_sample_files.py``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import logging
import zipfile
from pathlib import Path

logger = logging.getLogger(__name__)

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "api" / "sample"
FIXED_DATE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)

# fpdf2's core fonts are Latin-1 only: keep this text ASCII.
PLATE_TECTONICS: list[tuple[str, list[str]]] = [
    (
        "Plate Tectonics",
        [
            "Plate tectonics is the scientific theory that Earth's outer shell, the lithosphere, is "
            "broken into large rigid pieces called plates that move slowly over the hotter, weaker "
            "layer beneath them, the asthenosphere. The theory explains the locations of most "
            "earthquakes, volcanoes and mountain ranges, and it was widely accepted by geologists in "
            "the late 1960s.",
            "In 1912 the German scientist Alfred Wegener proposed continental drift. He noticed that "
            "the coasts of South America and Africa fit together like puzzle pieces, and that "
            "matching fossils and rock formations appear on continents now separated by oceans. "
            "Wegener could not explain what force moved the continents, and many geologists rejected "
            "his idea for decades.",
            "Evidence from the ocean floor changed that. In the 1950s and 1960s, surveys revealed "
            "long mid-ocean ridges and stripes of rock with alternating magnetic polarity arranged "
            "symmetrically on either side of them. This showed that new ocean floor forms at the "
            "ridges and spreads outward, a process called seafloor spreading.",
        ],
    ),
    (
        "Plate Boundaries",
        [
            "At divergent boundaries plates move apart and magma rises to form new crust, as along "
            "the Mid-Atlantic Ridge and in the East African Rift. At convergent boundaries plates "
            "move toward each other. When oceanic crust meets continental crust, the denser oceanic "
            "plate sinks beneath the other in a process called subduction, producing deep trenches "
            "and chains of volcanoes such as the Andes. When two continents collide, neither sinks "
            "easily and the crust crumples upward; the Himalayas formed this way as India collided "
            "with Asia.",
            "At transform boundaries plates slide past each other horizontally. The San Andreas Fault"
            " in California is a well-known example, and the sudden release of stress along such "
            "faults causes powerful earthquakes.",
            "Plates move at a few centimetres per year, roughly as fast as fingernails grow. The "
            "motion is driven mainly by the pull of sinking slabs at subduction zones, with help from"
            " the push at spreading ridges and from convection in the mantle. Over hundreds of "
            "millions of years these movements have repeatedly assembled and broken apart "
            "supercontinents such as Pangaea.",
        ],
    ),
]

SOURDOUGH_TITLE = "Sourdough Fermentation"
SOURDOUGH_PARAGRAPHS = [
    "Sourdough bread is leavened by a starter, a mixture of flour and water in which wild yeasts and "
    "lactic acid bacteria live together. Unlike bread made with commercial baker's yeast, which "
    "contains a single strain of Saccharomyces cerevisiae, a sourdough starter is a stable community "
    "of microbes that the baker keeps alive by feeding it fresh flour and water regularly.",
    "The yeasts in the starter ferment sugars released from the flour's starch and produce carbon "
    "dioxide and ethanol. The gas is trapped by the gluten network in the dough and makes it rise. At"
    " the same time the lactic acid bacteria, often species of Lactobacillus and related genera, "
    "produce lactic and acetic acids. These acids give sourdough its tangy flavour, lower the pH of "
    "the dough and help keep the bread fresh for longer by slowing the growth of mould.",
    "Bakers can steer the flavour through temperature and hydration. Warmer, wetter doughs favour "
    "lactic acid, which tastes mild and creamy, while cooler, stiffer doughs favour the sharper "
    "acetic acid. A long, cold fermentation in the refrigerator also develops more complex flavours.",
    "The long fermentation has other effects. Enzymes active in the acidic dough break down part of "
    "the phytic acid in the flour, which can make minerals easier to absorb, and some of the "
    "carbohydrates that cause digestive discomfort in sensitive people are broken down as well.",
    "A typical schedule for a simple loaf looks like this:",
]
SOURDOUGH_TABLE = [
    ("Step", "What happens", "Typical time"),
    ("Feed the starter", "Starter doubles and becomes active", "4 to 12 hours"),
    ("Mix and rest", "Flour hydrates and gluten starts to form", "30 to 60 minutes"),
    ("Bulk fermentation", "Dough rises with periodic stretch and folds", "3 to 6 hours"),
    ("Shape and proof", "Loaf rises again, often overnight in the fridge", "2 to 16 hours"),
    ("Bake", "Steam and high heat give oven spring and a crisp crust", "40 to 50 minutes"),
]
SOURDOUGH_CLOSING = (
    "Because a starter is a living culture, it can be kept for years. Some bakeries maintain starters that "
    "they say have been fed continuously for generations."
)


def make_pdf(path: Path) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_title("Plate Tectonics")
    pdf.set_margins(20, 20, 20)
    for heading, paragraphs in PLATE_TECTONICS:
        pdf.add_page()
        pdf.set_font("Helvetica", style="B", size=18)
        pdf.multi_cell(0, 10, heading)
        pdf.ln(4)
        pdf.set_font("Helvetica", size=11)
        for paragraph in paragraphs:
            pdf.multi_cell(0, 6, paragraph)
            pdf.ln(4)
    pdf.output(str(path))


def make_docx(path: Path) -> None:
    import docx

    document = docx.Document()
    document.core_properties.title = SOURDOUGH_TITLE
    document.core_properties.created = FIXED_DATE
    document.core_properties.modified = FIXED_DATE
    document.add_heading(SOURDOUGH_TITLE, level=1)
    for paragraph in SOURDOUGH_PARAGRAPHS:
        document.add_paragraph(paragraph)
    table = document.add_table(rows=0, cols=len(SOURDOUGH_TABLE[0]))
    table.style = "Table Grid"
    for row in SOURDOUGH_TABLE:
        cells = table.add_row().cells
        for cell, text in zip(cells, row, strict=True):
            cell.text = text
    document.add_paragraph(SOURDOUGH_CLOSING)
    buffer = io.BytesIO()
    document.save(buffer)
    # python-docx stamps each zip entry with the current time; pin them so reruns are byte-identical
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            pinned = zipfile.ZipInfo(info.filename, date_time=FIXED_DATE.timetuple()[:6])
            pinned.compress_type = zipfile.ZIP_DEFLATED
            target.writestr(pinned, source.read(info.filename))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--out", type=Path, default=SAMPLE_DIR, help="folder to write into (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    for name, writer in (("plate-tectonics.pdf", make_pdf), ("sourdough-fermentation.docx", make_docx)):
        writer(args.out / name)
        logger.info("wrote %s", args.out / name)


if __name__ == "__main__":
    main()
