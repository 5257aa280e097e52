use super::*;

#[test]
fn ranks_are_sorted_and_checked() {
    assert_eq!(normalize(&[3, 1], 4).unwrap(), [1, 3]);
    assert!(normalize(&[], 4).unwrap_err().contains("at least one rank"));
    assert!(
        normalize(&[1, 1], 4)
            .unwrap_err()
            .contains("rank 1 is listed twice")
    );
    let e = normalize(&[0, 4], 4).unwrap_err();
    assert!(
        e.contains("rank 4 is not in this job (ranks are 0..4)"),
        "{e}"
    );
}

#[test]
fn proposals_round_trip_through_the_fixed_size_words() {
    let size = 3;
    let props = [
        Proposal::Add(vec![0, 2]),
        Proposal::Remove {
            id: 7,
            in_flight: 2,
        },
        Proposal::BadAdd("why".into()),
    ];
    let mut words = Vec::new();
    for (r, p) in props.iter().enumerate() {
        let w = p.encode(10 + r as u64, size);
        assert_eq!(w.len(), HEADER + size);
        words.extend(w);
    }
    let (hosts, back) = Proposal::decode_all(&words, size).unwrap();
    assert_eq!(hosts, [10, 11, 12]);
    assert_eq!(back[0], Proposal::Add(vec![0, 2]));
    assert_eq!(
        back[1],
        Proposal::Remove {
            id: 7,
            in_flight: 2
        }
    );
    assert!(matches!(back[2], Proposal::BadAdd(_)));
    assert!(Proposal::decode_all(&words[1..], size).is_err());
}

#[test]
fn every_rank_decides_the_same_about_an_add() {
    let same = vec![Proposal::Add(vec![0, 1]); 3];
    assert_eq!(agree_add(&same).unwrap(), [0, 1]);

    let differ = [
        Proposal::Add(vec![0, 1]),
        Proposal::Add(vec![0, 2]),
        Proposal::Add(vec![0, 1]),
    ];
    let e = agree_add(&differ).unwrap_err();
    assert!(
        e.contains("rank 1: [0, 2]") && e.contains("rank 0: [0, 1]"),
        "{e}"
    );

    let bad = [Proposal::Add(vec![0]), Proposal::BadAdd("x".into())];
    assert!(agree_add(&bad).unwrap_err().contains("rank(s) [1]"));

    let mixed = [
        Proposal::Add(vec![0]),
        Proposal::Remove {
            id: 1,
            in_flight: 0,
        },
    ];
    assert!(
        agree_add(&mixed)
            .unwrap_err()
            .contains("rank 1 called remove_process_set")
    );
}

#[test]
fn a_remove_needs_one_id_and_nothing_in_flight() {
    let rm = |id, in_flight| Proposal::Remove { id, in_flight };
    assert_eq!(agree_remove(&[rm(2, 0), rm(2, 0)]).unwrap(), 2);
    let e = agree_remove(&[rm(2, 0), rm(3, 0)]).unwrap_err();
    assert!(e.contains("ids by rank: [2, 3]"), "{e}");
    let e = agree_remove(&[rm(2, 0), rm(2, 5)]).unwrap_err();
    assert!(e.contains("in flight (rank 1: 5)"), "{e}");
    let e = agree_remove(&[Proposal::Add(vec![0]), rm(2, 0)]).unwrap_err();
    assert!(e.contains("rank 0 called add_process_set"), "{e}");
}

#[test]
fn a_sets_topology_counts_only_its_members_per_host() {
    // Two hosts of three ranks: keys 0 (ranks 0-2) and 3 (ranks 3-5).
    let hosts = [0, 0, 0, 3, 3, 3];
    let members = [1, 2, 4];
    let t = set_topology(&members, &hosts, 4);
    assert_eq!((t.rank, t.size), (2, 3));
    assert_eq!((t.local_rank, t.local_size), (0, 1));
    // Local rank 0 on each host: ranks 1 and 4.
    assert_eq!((t.cross_rank, t.cross_size), (1, 2));
    let t = set_topology(&members, &hosts, 2);
    assert_eq!((t.rank, t.local_rank, t.local_size), (1, 1, 2));
    assert_eq!((t.cross_rank, t.cross_size), (0, 1));
}

#[test]
fn a_sets_errors_name_global_ranks_and_the_set() {
    let view = SetView::new(&ProcessSet {
        id: 2,
        ranks: vec![1, 3],
    });
    let e = view.renumber(Error::transport(
        0,
        "allreduce",
        "t",
        hora_transport::TransportError::ConnectionLost {
            peer: 1,
            detail: "gone".into(),
        },
    ));
    assert_eq!(e.peer(), Some(3));
    let text = e.to_string();
    assert!(
        text.starts_with("rank 1: allreduce in process set 2 (global ranks [1, 3]"),
        "{text}"
    );
    let e = view.renumber(Error::ShutDown {
        rank: 1,
        reason: None,
    });
    assert!(matches!(e, Error::ShutDown { rank: 3, .. }), "{e:?}");
}

#[test]
fn the_table_knows_every_set_and_hands_out_increasing_ids() {
    let mut t = Table::new(4);
    assert_eq!(t.get(GLOBAL_ID).unwrap().ranks, [0, 1, 2, 3]);
    assert_eq!(t.next_id(), 1);
    t.insert(
        ProcessSet {
            id: 1,
            ranks: vec![0, 1],
        },
        None,
    );
    assert_eq!(t.next_id(), 2);
    assert_eq!(t.find(&[0, 1]), Some(1));
    assert!(t.remove(1).is_some());
    // Ids are not reused: a set's store keys (its ranks' addresses) stay behind it.
    assert_eq!(t.next_id(), 2);
    assert_eq!(t.all().len(), 1);
}
