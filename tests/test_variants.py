"""Each LEO variant of the paper, configured by its shipped gin files, passes the shared
checks of helpers.LEOVariantChecks (meta-gradients, closed form vs tape, evaluation,
weights)."""

from helpers import LEOVariantChecks

FINAL = "models/leo_final.gin"


class TestFinal(LEOVariantChecks):
  GIN_FILES = (FINAL,)


class TestPaper1Shot(LEOVariantChecks):
  GIN_FILES = ("models/leo_paper_1shot.gin",)


class TestPaper5Shot(LEOVariantChecks):
  GIN_FILES = ("models/leo_paper_5shot.gin",)


class TestDeterministic(LEOVariantChecks):
  GIN_FILES = (FINAL, "ablations/deterministic.gin")


class TestRandomPrior(LEOVariantChecks):
  GIN_FILES = (FINAL, "ablations/random_prior.gin")


class TestMAML(LEOVariantChecks):
  GIN_FILES = (FINAL, "ablations/maml.gin")


class TestMAMLOriginal(LEOVariantChecks):
  GIN_FILES = (FINAL, "ablations/maml_original.gin")
