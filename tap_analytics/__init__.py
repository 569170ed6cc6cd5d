"""tap-analytics: a Singer tap for Scuba/Interana, Alation and IntelePeer Insights."""
