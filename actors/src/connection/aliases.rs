//! Outbound topic aliases (MQTT 5): repeated topics to a client that announced a Topic Alias
//! Maximum are sent as a two-byte alias instead of the name.
//!
//! Policy `Lru`: the first PUBLISH on a topic carries the name and assigns an alias; later ones
//! carry only the alias. When every alias is taken, the least recently used one is reassigned
//! to the new topic (sent with its name, which re-binds the alias, [MQTT-3.3.2-12]).

use std::collections::{BTreeMap, HashMap};

use starling_proto::{Properties, Publish, TopicName};

/// How the broker uses topic aliases towards clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AliasPolicy {
    /// Never send aliases.
    Off,
    /// Alias repeated topics; recycle the least recently used alias when all are taken.
    #[default]
    Lru,
}

/// One connection's outbound aliases.
#[derive(Debug, Default)]
pub(super) struct OutboundAliases {
    max: u16,
    by_topic: HashMap<TopicName, (u16, u64)>,
    by_use: BTreeMap<u64, TopicName>,
    tick: u64,
}

impl OutboundAliases {
    /// Aliases up to the client's Topic Alias Maximum (0: none).
    pub(super) fn new(max: u16) -> OutboundAliases {
        OutboundAliases {
            max,
            ..OutboundAliases::default()
        }
    }

    /// Rewrites a PUBLISH to use an alias, when there is room for one.
    pub(super) fn apply(&mut self, publish: &mut Publish) {
        if self.max == 0 || publish.topic.is_empty() {
            return;
        }
        self.tick += 1;
        let tick = self.tick;
        let (alias, known) = match self.by_topic.get_mut(&publish.topic) {
            Some((alias, used)) => {
                self.by_use.remove(used);
                *used = tick;
                (*alias, true)
            }
            None => {
                let alias = if self.by_topic.len() < usize::from(self.max) {
                    self.by_topic.len() as u16 + 1
                } else {
                    // Recycle the least recently used alias.
                    let Some((_, oldest)) = self.by_use.pop_first() else {
                        return;
                    };
                    match self.by_topic.remove(&oldest) {
                        Some((alias, _)) => alias,
                        None => return,
                    }
                };
                self.by_topic.insert(publish.topic.clone(), (alias, tick));
                (alias, false)
            }
        };
        self.by_use.insert(tick, publish.topic.clone());
        publish
            .properties
            .get_or_insert_with(|| Box::new(Properties::default()))
            .topic_alias = Some(alias);
        if known {
            publish.topic = TopicName::empty();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use starling_proto::QoS;

    fn publish(topic: &str) -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: TopicName::new(topic).expect("topic"),
            packet_id: None,
            properties: None,
            payload: Bytes::new(),
        }
    }

    fn sent(aliases: &mut OutboundAliases, topic: &str) -> (String, Option<u16>) {
        let mut p = publish(topic);
        aliases.apply(&mut p);
        (
            p.topic.as_str().to_owned(),
            p.properties.and_then(|p| p.topic_alias),
        )
    }

    #[test]
    fn a_repeated_topic_is_sent_as_its_alias() {
        let mut a = OutboundAliases::new(10);
        assert_eq!(sent(&mut a, "a/b"), ("a/b".to_owned(), Some(1)));
        assert_eq!(sent(&mut a, "a/b"), (String::new(), Some(1)));
        assert_eq!(sent(&mut a, "c"), ("c".to_owned(), Some(2)));
    }

    #[test]
    fn the_least_recently_used_alias_is_recycled() {
        let mut a = OutboundAliases::new(2);
        sent(&mut a, "x");
        sent(&mut a, "y");
        sent(&mut a, "x"); // y is now the least recently used
        assert_eq!(sent(&mut a, "z"), ("z".to_owned(), Some(2)));
        assert_eq!(sent(&mut a, "x"), (String::new(), Some(1)));
        assert_eq!(
            sent(&mut a, "y"),
            ("y".to_owned(), Some(2)),
            "y was evicted"
        );
    }

    #[test]
    fn no_aliases_without_a_client_maximum() {
        let mut a = OutboundAliases::new(0);
        assert_eq!(sent(&mut a, "a"), ("a".to_owned(), None));
        assert_eq!(sent(&mut a, "a"), ("a".to_owned(), None));
    }
}
