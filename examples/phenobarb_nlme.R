# The R `nlme` reference fit for the phenobarbital example (run: Rscript examples/phenobarb_nlme.R).
#
# Writes examples/data/phenobarb.csv (R's nlme::Phenobarb as a NONMEM-format data set: 59
# neonates, repeated IV boluses of phenobarbital [ug/kg] over days, 1-6 concentrations [ug/L] each;
# CMT 1 = the central compartment, as for nlme_ppl's pk_iv_1cmt, NONMEM's ADVAN1) and
# examples/data/phenobarb_nlme.csv (the maximum-likelihood estimates of nlme).
#
# The model is the one nlme_ppl's pk_iv_1cmt fits, in the data's per-kg units: one compartment,
# IV boluses by superposition, log-normal random effects on CL [L/h/kg] and V [L/kg] with a
# diagonal covariance, additive error:
#   C(t) = sum over doses before t of AMT / V exp(-CL/V (t - t_dose)),   y = C + eps,  eps ~ N(0, a^2).
# A sample at the time of a dose is taken before that dose (NONMEM's order when the sample row
# comes first, and nlme_ppl's convention).
library(nlme)
here <- tryCatch(dirname(sys.frame(1)$ofile), error = function(e) "examples")
if (!dir.exists(file.path(here, "data"))) here <- "examples"

d <- as.data.frame(Phenobarb)
d$ID <- as.integer(as.character(d$Subject))
d$APGAR <- as.integer(as.character(d$Apgar))
d <- d[order(d$ID, d$time, is.na(d$conc)), ]  # at equal times, the sample row before the dose row
is_obs <- !is.na(d$conc)
nm <- data.frame(ID = d$ID, TIME = d$time, DV = ifelse(is_obs, d$conc, 0), AMT = ifelse(is_obs, 0, d$dose),
                 EVID = ifelse(is_obs, 0, 1), MDV = ifelse(is_obs, 0, 1), CMT = 1, WT = d$Wt, APGAR = d$APGAR)
write.csv(nm, file.path(here, "data", "phenobarb.csv"), row.names = FALSE, quote = FALSE)

doses <- d[!is_obs, c("ID", "time", "dose")]
obs <- d[is_obs, ]
pheno <- function(lcl, lv, t, id) {
  out <- numeric(length(t))
  for (k in seq_along(t)) {
    ds <- doses[doses$ID == id[k] & doses$time < t[k], ]
    out[k] <- sum(ds$dose * exp(-exp(lcl[k] - lv[k]) * (t[k] - ds$time))) / exp(lv[k])
  }
  out
}
fit <- nlme(conc ~ pheno(lcl, lv, time, ID), data = obs,
            fixed = lcl + lv ~ 1, random = pdDiag(lcl + lv ~ 1), groups = ~ ID,
            start = c(lcl = -5.3, lv = 0.0), method = "ML",
            control = nlmeControl(maxIter = 200, pnlsMaxIter = 50, msMaxIter = 200))
print(summary(fit))
fe <- fixef(fit)
sds <- as.numeric(VarCorr(fit)[1:2, "StdDev"])
out <- data.frame(
  parameter = c("mean[CL]", "mean[V]", "sd[CL]", "sd[V]", "sigma_add_sd", "loglik"),
  estimate = c(fe[["lcl"]], fe[["lv"]], sds, fit$sigma, as.numeric(logLik(fit))),
  se = c(sqrt(diag(vcov(fit))), rep(NA, 4))
)
write.csv(out, file.path(here, "data", "phenobarb_nlme.csv"), row.names = FALSE)
cat(sprintf("R %s, nlme %s\n", getRversion(), packageVersion("nlme")))
print(out)
