//! Flow and outcome measures, computed from every person's [`PersonFacts`].
//! Definitions (also in docs/measures.md); all dates are Europe/London calendar dates and
//! the period is `from..=to`:
//!
//! - **admissions**: stays admitted in the period.
//! - **discharges**: stays discharged in the period.
//! - **delayed bed-days**: for every stay with a discharge ready date (DRD), the days `d` in
//!   the period with `DRD <= d < end`, where `end` is the discharge date, or today while
//!   still in hospital. Summed over stays this equals the sum of days delayed.
//! - **DRD → discharge**: for stays discharged in the period with a DRD, discharge date −
//!   DRD in days (never negative); median and 90th percentile (nearest rank), overall, by
//!   pathway and by the latest delay's attribution (`none` when no delay was recorded).
//! - **pathway mix**: discharges in the period by pathway (`unknown` without one).
//! - **discharged to usual residence**: share of discharges in the period whose
//!   destination is `usual-residence`.
//! - **readmissions within 30 days**: of discharges in the period, excluding deaths, the
//!   share followed by another admission of the same person within 30 days of discharge
//!   (an admission as a transfer from another provider is not one).
//! - **91-day outcome after reablement** (ASCOF 2B style), reported in the period in which
//!   it becomes known: people discharged on pathway 1 with a reablement package that started
//!   between the day before and 14 days after discharge, whose 91st day after discharge
//!   falls in the period and is no later than today; the share at home on day 91: not in
//!   hospital on day 91, not placed in a care home (a residential or nursing package
//!   started) and not died (a later stay's discharge destination) within the 91 days. A
//!   readmission ended by day 91 leaves the person at home. Given at any age and, as
//!   ASCOF 2B(1) counts it, for people aged 65 or over on the day of discharge (people
//!   without a known birth date are counted in `age_unknown`, not in that share). Such
//!   discharges in the period whose 91st day is still to come are counted as `pending`.

use std::collections::BTreeMap;

use chrono::{Duration, NaiveDate};
use handover_events::catalogue::{Attribution, Destination, ServiceType};
use serde::Serialize;

use crate::rows::PersonFacts;

/// Which stays count.
#[derive(Debug, Clone, Default)]
pub struct MeasureFilter {
    /// First day of the period.
    pub from: Option<NaiveDate>,
    /// Last day of the period.
    pub to: Option<NaiveDate>,
    /// Only this site.
    pub site: Option<String>,
    /// Only this responsible council.
    pub council: Option<String>,
}

impl MeasureFilter {
    /// The period as the measures take it, `(from, to)`: without `to`, `today`; without
    /// `from`, the 28 days up to `to`.
    pub fn period(&self, today: NaiveDate) -> (NaiveDate, NaiveDate) {
        let to = self.to.unwrap_or(today);
        (self.from.unwrap_or(to - Duration::days(27)), to)
    }
}

/// A distribution of whole days.
#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
pub struct Distribution {
    /// Number of values.
    pub count: usize,
    /// Median (nearest rank); None when empty.
    pub median: Option<i64>,
    /// 90th percentile (nearest rank); None when empty.
    pub p90: Option<i64>,
    /// Mean, one decimal; None when empty.
    pub mean: Option<f64>,
    /// Counts by value (days → stays), for charts.
    pub histogram: BTreeMap<i64, usize>,
}

/// A share with its numerator and denominator.
#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
pub struct Share {
    /// Numerator.
    pub numerator: usize,
    /// Denominator.
    pub denominator: usize,
    /// numerator / denominator, None when the denominator is 0.
    pub share: Option<f64>,
}

/// The 91-day outcome.
#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
pub struct Outcome91 {
    /// At home on day 91 (not in hospital or a care home then, not died since), of those
    /// whose day 91 has passed, at any age.
    #[serde(flatten)]
    pub at_home: Share,
    /// The same for people aged 65 or over on the day of discharge: ASCOF 2B(1) (SALT
    /// STS004). People whose birth date is not known are left out of it.
    pub aged_65_and_over: Share,
    /// Of the denominator of `at_home`, how many have no known birth date.
    pub age_unknown: usize,
    /// Discharged into reablement whose day 91 has not come yet.
    pub pending: usize,
}

/// `GET /v1/measures/flow`.
#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
pub struct FlowMeasures {
    /// First day of the period.
    pub from: NaiveDate,
    /// Last day of the period.
    pub to: NaiveDate,
    /// The date taken as today.
    pub as_of: NaiveDate,
    /// Admissions.
    pub admissions: usize,
    /// Discharges.
    pub discharges: usize,
    /// Delayed bed-days in the period.
    pub delayed_bed_days: i64,
    /// Delayed bed-days per day of the period (for the chart).
    pub delayed_bed_days_by_day: BTreeMap<NaiveDate, i64>,
    /// People in hospital past their DRD at the end of the period (or today).
    pub delayed_now: usize,
    /// DRD → discharge in days.
    pub ready_to_discharge: Distribution,
    /// … by pathway.
    pub ready_to_discharge_by_pathway: BTreeMap<String, Distribution>,
    /// … by attribution.
    pub ready_to_discharge_by_attribution: BTreeMap<String, Distribution>,
    /// Discharges by pathway.
    pub pathway_mix: BTreeMap<String, usize>,
    /// Share of discharges to the usual place of residence.
    pub discharged_to_usual_residence: Share,
    /// Share of discharges followed by a readmission within 30 days.
    pub readmitted_within_30_days: Share,
    /// 91-day outcome after reablement.
    pub at_home_91_days_after_reablement: Outcome91,
}

fn distribution(mut values: Vec<i64>) -> Distribution {
    values.sort_unstable();
    let n = values.len();
    let rank = |p: f64| -> Option<i64> {
        if n == 0 {
            return None;
        }
        let r = ((p * n as f64).ceil() as usize).clamp(1, n);
        Some(values[r - 1])
    };
    let mut histogram = BTreeMap::new();
    for v in &values {
        *histogram.entry(*v).or_insert(0) += 1;
    }
    Distribution {
        count: n,
        median: rank(0.5),
        p90: rank(0.9),
        mean: (n > 0).then(|| (values.iter().sum::<i64>() as f64 / n as f64 * 10.0).round() / 10.0),
        histogram,
    }
}

fn share(numerator: usize, denominator: usize) -> Share {
    Share {
        numerator,
        denominator,
        share: (denominator > 0)
            .then(|| (numerator as f64 / denominator as f64 * 1000.0).round() / 1000.0),
    }
}

fn attribution_name(a: Option<Attribution>) -> String {
    a.map(|a| a.as_str().to_string())
        .unwrap_or_else(|| "none".into())
}

fn pathway_name(p: Option<u8>) -> String {
    p.map(|p| p.to_string()).unwrap_or_else(|| "unknown".into())
}

/// Age in whole years on `day` of someone born on `born`.
fn age_on(born: NaiveDate, day: NaiveDate) -> i32 {
    use chrono::Datelike;
    let had_birthday = (day.month(), day.day()) >= (born.month(), born.day());
    day.year() - born.year() - i32::from(!had_birthday)
}

/// Computes the measures over `people` for `filter`, as of `today`. Without `from`/`to`
/// the period is the 28 days up to today.
pub fn flow(
    people: impl IntoIterator<Item = PersonFacts>,
    filter: &MeasureFilter,
    today: NaiveDate,
) -> FlowMeasures {
    let (from, to) = filter.period(today);
    let in_period = |d: Option<NaiveDate>| d.map(|d| d >= from && d <= to).unwrap_or(false);
    let mut m = FlowMeasures {
        from,
        to,
        as_of: today,
        admissions: 0,
        discharges: 0,
        delayed_bed_days: 0,
        delayed_bed_days_by_day: BTreeMap::new(),
        delayed_now: 0,
        ready_to_discharge: distribution(Vec::new()),
        ready_to_discharge_by_pathway: BTreeMap::new(),
        ready_to_discharge_by_attribution: BTreeMap::new(),
        pathway_mix: BTreeMap::new(),
        discharged_to_usual_residence: share(0, 0),
        readmitted_within_30_days: share(0, 0),
        at_home_91_days_after_reablement: Outcome91 {
            at_home: share(0, 0),
            aged_65_and_over: share(0, 0),
            age_unknown: 0,
            pending: 0,
        },
    };
    let mut day = from;
    while day <= to {
        m.delayed_bed_days_by_day.insert(day, 0);
        day += Duration::days(1);
    }
    let mut waits = Vec::new();
    let mut by_pathway: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut by_attr: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let (mut usual, mut readmit_num, mut readmit_den) = (0, 0, 0);
    let (mut home91, mut den91, mut pending91) = (0, 0, 0);
    let (mut home91_older, mut den91_older, mut age_unknown) = (0, 0, 0);
    let horizon = to.min(today);

    for person in people {
        for (i, s) in person.stays.iter().enumerate() {
            if filter
                .site
                .as_ref()
                .is_some_and(|f| s.site.as_ref() != Some(f))
                || filter
                    .council
                    .as_ref()
                    .is_some_and(|f| s.council.as_ref() != Some(f))
            {
                continue;
            }
            if in_period(s.admitted) {
                m.admissions += 1;
            }
            if let Some(ready) = s.ready {
                // days d with ready <= d < end, clipped to the period
                let end = s.discharged.unwrap_or(today);
                let mut d = ready.max(from);
                while d < end && d <= to {
                    m.delayed_bed_days += 1;
                    *m.delayed_bed_days_by_day.entry(d).or_insert(0) += 1;
                    d += Duration::days(1);
                }
                let still_in_at_horizon = s.discharged.map(|x| x > horizon).unwrap_or(true);
                if ready < horizon && still_in_at_horizon && s.admitted.is_none_or(|a| a <= horizon)
                {
                    m.delayed_now += 1;
                }
            }
            if let Some(discharged) = s.discharged {
                let reabled = person.packages.iter().any(|p| {
                    p.service_type == Some(ServiceType::Reablement)
                        && p.started_on.is_some_and(|d| {
                            d >= discharged - Duration::days(1)
                                && d <= discharged + Duration::days(14)
                        })
                });
                if s.pathway == Some(1) && reabled && s.destination != Some(Destination::Died) {
                    let day91 = discharged + Duration::days(91);
                    if day91 > today {
                        if in_period(Some(discharged)) {
                            pending91 += 1;
                        }
                    } else if in_period(Some(day91)) {
                        // ASCOF 2B: not at home are those in hospital or a care home on
                        // day 91 and those who died within the three months; someone
                        // readmitted and home again by then is at home.
                        let later = &person.stays[i + 1..];
                        let in_hospital = later.iter().any(|n| {
                            n.admitted.is_some_and(|a| a >= discharged && a <= day91)
                                && n.discharged.is_none_or(|x| x > day91)
                        });
                        let died = later.iter().any(|n| {
                            n.destination == Some(Destination::Died)
                                && n.discharged.is_some_and(|x| x <= day91)
                        });
                        let care_home = person.packages.iter().any(|p| {
                            matches!(
                                p.service_type,
                                Some(ServiceType::Residential | ServiceType::Nursing)
                            ) && p.started_on.is_some_and(|d| d > discharged && d <= day91)
                        });
                        let at_home = !in_hospital && !died && !care_home;
                        den91 += 1;
                        home91 += usize::from(at_home);
                        match person.birth_date.map(|b| age_on(b, discharged)) {
                            None => age_unknown += 1,
                            Some(age) if age >= 65 => {
                                den91_older += 1;
                                home91_older += usize::from(at_home);
                            }
                            Some(_) => {}
                        }
                    }
                }
            }
            if !in_period(s.discharged) {
                continue;
            }
            let Some(discharged) = s.discharged else {
                continue;
            };
            m.discharges += 1;
            *m.pathway_mix.entry(pathway_name(s.pathway)).or_insert(0) += 1;
            if s.destination == Some(Destination::UsualResidence) {
                usual += 1;
            }
            if let Some(ready) = s.ready {
                let days = (discharged - ready).num_days().max(0);
                waits.push(days);
                by_pathway
                    .entry(pathway_name(s.pathway))
                    .or_default()
                    .push(days);
                by_attr
                    .entry(attribution_name(s.attributed_to))
                    .or_default()
                    .push(days);
            }
            // A transfer to another provider is the same care going on, not a readmission
            // (NHS readmission measures link such spells into one).
            let readmitted_within = |days: i64| {
                person.stays[i + 1..]
                    .iter()
                    .filter(|n| !n.transfer)
                    .any(|n| {
                        n.admitted.is_some_and(|a| {
                            a > discharged - Duration::days(1)
                                && a <= discharged + Duration::days(days)
                        })
                    })
            };
            if s.destination != Some(Destination::Died) {
                readmit_den += 1;
                if readmitted_within(30) {
                    readmit_num += 1;
                }
            }
        }
    }
    m.ready_to_discharge = distribution(waits);
    m.ready_to_discharge_by_pathway = by_pathway
        .into_iter()
        .map(|(k, v)| (k, distribution(v)))
        .collect();
    m.ready_to_discharge_by_attribution = by_attr
        .into_iter()
        .map(|(k, v)| (k, distribution(v)))
        .collect();
    m.discharged_to_usual_residence = share(usual, m.discharges);
    m.readmitted_within_30_days = share(readmit_num, readmit_den);
    m.at_home_91_days_after_reablement = Outcome91 {
        at_home: share(home91, den91),
        aged_65_and_over: share(home91_older, den91_older),
        age_unknown,
        pending: pending91,
    };
    m
}
