package pipeline

import (
	"github.com/devflow/flowguard/policy"
	"github.com/devflow/flowguard/quotas"
)

// dailyGroup is what a fitted daily quota is for: a tier's endpoint scope,
// as the usage recorder groups it (quotas.AllEndpoints for a rule that
// covers the key's whole traffic).
type dailyGroup struct{ tier, endpoint string }

func groupOf(r *policy.Rule) dailyGroup {
	if r.Scope == "" {
		return dailyGroup{r.Tier, quotas.AllEndpoints}
	}
	return dailyGroup{r.Tier, r.Scope}
}

// dailyQuota is the rule's daily quota before the multiplier: its pinned
// one, or the installed fit of its group; 0: no daily window.
func (p *Pipeline) dailyQuota(r *policy.Rule) float64 {
	if r.Daily > 0 {
		return float64(r.Daily)
	}
	if !r.DailyFitted {
		return 0
	}
	if m := p.daily.Load(); m != nil {
		return (*m)[groupOf(r)]
	}
	return 0
}

// SetDailyQuotas installs fitted daily quotas, replacing the ones before:
// from the next decision on, the rules with daily_quota: fitted of each
// quota's tier and endpoint get it as their second window. A group the fit
// has no quota for has no daily window.
func (p *Pipeline) SetDailyQuotas(qs []quotas.Quota) {
	m := make(map[dailyGroup]float64, len(qs))
	for _, q := range qs {
		m[dailyGroup{q.Tier, q.Endpoint}] = q.Quota
	}
	p.daily.Store(&m)
}

// DailyQuota is the daily quota a rule enforces now, before the
// multiplier; 0: none.
func (p *Pipeline) DailyQuota(r *policy.Rule) float64 { return p.dailyQuota(r) }
