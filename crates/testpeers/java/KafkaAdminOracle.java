// Kafka's own Java AdminClient as the oracle of crates/kafka/tests/apache_kafka.rs: what the
// broker says about a group's offsets and a topic's log start / end / last stable offset, and
// deleting records (as kafka-delete-records does). Compiled once per test run against the
// broker's own jars (tests/common/apache_kafka.rs).
//
//   offsets <bootstrap> <group> <topic>    one JSON line: {"<partition>": {"committed": n|null,
//                                          "start": n, "end": n, "stable": n}, ...}
//   delete-records <bootstrap> <topic> <partition> <before-offset>
//                                          prints the new log start offset
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ListOffsetsOptions;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.IsolationLevel;
import org.apache.kafka.common.TopicPartition;

public class KafkaAdminOracle {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[1]);
        try (Admin admin = Admin.create(props)) {
            switch (args[0]) {
                case "offsets" -> offsets(admin, args[2], args[3]);
                case "delete-records" -> deleteRecords(admin, args[2], Integer.parseInt(args[3]),
                        Long.parseLong(args[4]));
                default -> throw new IllegalArgumentException("unknown command " + args[0]);
            }
        }
    }

    static void offsets(Admin admin, String group, String topic) throws Exception {
        List<TopicPartition> partitions = admin.describeTopics(List.of(topic)).allTopicNames().get()
                .get(topic).partitions().stream()
                .map(p -> new TopicPartition(topic, p.partition()))
                .collect(Collectors.toList());
        Map<TopicPartition, OffsetAndMetadata> committed =
                admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
        var start = list(admin, partitions, OffsetSpec.earliest(), IsolationLevel.READ_UNCOMMITTED);
        var end = list(admin, partitions, OffsetSpec.latest(), IsolationLevel.READ_UNCOMMITTED);
        var stable = list(admin, partitions, OffsetSpec.latest(), IsolationLevel.READ_COMMITTED);
        Map<Integer, String> out = new TreeMap<>();
        for (TopicPartition tp : partitions) {
            OffsetAndMetadata c = committed.get(tp);
            out.put(tp.partition(), String.format(
                    "{\"committed\": %s, \"start\": %d, \"end\": %d, \"stable\": %d}",
                    c == null ? "null" : Long.toString(c.offset()),
                    start.get(tp), end.get(tp), stable.get(tp)));
        }
        System.out.println(out.entrySet().stream()
                .map(e -> "\"" + e.getKey() + "\": " + e.getValue())
                .collect(Collectors.joining(", ", "{", "}")));
    }

    static Map<TopicPartition, Long> list(Admin admin, List<TopicPartition> partitions,
            OffsetSpec spec, IsolationLevel isolation) throws Exception {
        Map<TopicPartition, OffsetSpec> request = new HashMap<>();
        partitions.forEach(tp -> request.put(tp, spec));
        var result = admin.listOffsets(request, new ListOffsetsOptions(isolation)).all().get();
        Map<TopicPartition, Long> out = new HashMap<>();
        result.forEach((tp, info) -> out.put(tp, info.offset()));
        return out;
    }

    static void deleteRecords(Admin admin, String topic, int partition, long before)
            throws Exception {
        TopicPartition tp = new TopicPartition(topic, partition);
        var result = admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(before)));
        System.out.println(result.lowWatermarks().get(tp).get().lowWatermark());
    }
}
